"""Integer arithmetic between spike-driven stages (numpy int64, exact, deterministic).

These functions are the between-stage "neuron programs" of an SDLLM. The integer reference
(`sdllm.models.integer.reference`) and the runtime's neuron-unit cores call the very same
functions, so the only thing a compiled network can get wrong is what the compiler owns:
synapse tables, routing and timing.

Fixed-point formats (value = integer / 2**bits):
  FRAC        residual stream, q/k/v, attention output, gate/up, logits
  SCALE_FRAC  per-output-channel weight scales
  RATIO_FRAC  per-token quantile/RMS ratio of a normalised stage input
  EXP_FRAC    i-exp, sigmoid
  TRIG_FRAC   RoPE cos/sin tables
The residual stream is handed from layer to layer saturated to LlamaConfig.resid_bits signed bits
(`saturate`; 26 for dim 576: ±8,192 in float, beyond real activations), so its range is proved.
Every intermediate is bounded below 2**62 (checked in `round_div`).
"""

import functools
import math

import numpy as np

from sdllm.errors import OutOfRange
from sdllm.formats.model import qmax  # noqa: F401 — the integer range of a bit width, here with the arithmetic

FRAC = 12
SCALE_FRAC = 24
RATIO_FRAC = 16
EXP_FRAC = 15
TRIG_FRAC = 14

_LIMIT = 1 << 62
_LN2 = round(math.log(2) * (1 << FRAC))
# I-BERT's second-order fit of exp on (-ln2, 0]: exp(p) ~ A (p + B)^2 + C
_EXP_A = round(0.3585 * (1 << FRAC))
_EXP_B = round(1.353 * (1 << FRAC))
_EXP_C = round(0.344 * (1 << EXP_FRAC))
_EXP_MAX_SHIFT = EXP_FRAC + 2


def hadamard_shift(block: int) -> int:
    """The power of two 2**shift ≈ sqrt(block) that keeps a ±1 Hadamard transform's output in range."""
    return block.bit_length() // 2


def quantile_index(n: int, gamma: float) -> int:
    """Order statistic used as the γ-quantile of n values (no interpolation)."""
    return min(n - 1, max(0, math.ceil(gamma * n) - 1))


def round_div(n, d):
    """n / d rounded half away from zero; d > 0. Raises OutOfRange (an OverflowError) past 2**62."""
    n = np.asarray(n, dtype=np.int64)
    mag = np.abs(n)
    if n.size and int(mag.max()) >= _LIMIT:
        raise OutOfRange(f"fixed-point intermediate exceeds 2**62 (max |value| {int(mag.max())})")
    if np.ndim(d) == 0 and int(d) & (int(d) - 1) == 0:  # a power of two: the same integers by shifts
        mag += int(d) >> 1
        mag >>= int(d).bit_length() - 1
    else:
        d = np.asarray(d, dtype=np.int64)
        if np.broadcast_shapes(mag.shape, d.shape) != mag.shape:
            mag = np.broadcast_to(mag, np.broadcast_shapes(mag.shape, d.shape)).copy()
        mag *= 2
        mag += d
        mag //= 2 * d
    s = n >> 63  # -1 where n < 0, else 0: (mag ^ s) - s negates exactly there, without branches
    if s.shape != mag.shape:
        s = np.broadcast_to(s, mag.shape)
    mag ^= s
    mag -= s
    return mag


def isqrt(n):
    """floor(sqrt(n)) for non-negative int64 arrays, exact."""
    n = np.asarray(n, dtype=np.int64)
    r = np.floor(np.sqrt(n.astype(np.float64))).astype(np.int64)
    r -= (r * r > n).astype(np.int64)
    r += ((r + 1) * (r + 1) <= n).astype(np.int64)
    return r


def quantize(x, k: int, q_max: int, theta: int, wide: int = 0, wide_max: int = 0):
    """Per-row γ-quantile quantisation: step 1 of γ-SQP, float-free.

    m = k-th order statistic of |x| (the clipping range, in x's units), q = clip(round(x·Q/m)),
    dead zone: |q| <= theta sends nothing. Returns (q, m); x ≈ q·m/Q.
    With a wide group, the first `wide` channels are clipped at ±wide_max instead, and m is the
    k-th order statistic of the other channels' |x|: the same step m/Q for all.
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.maximum(np.partition(np.abs(x[..., wide:]), k, axis=-1)[..., k], 1)
    limit = np.full(x.shape[-1], q_max, np.int64)
    limit[:wide] = wide_max
    q = np.clip(round_div(x * q_max, m[..., None]), -limit, limit)
    q[np.abs(q) <= theta] = 0
    return q, m


def rms(x, eps_fx: int):
    """RMS of each row of a FRAC vector, in FRAC units: isqrt(mean(x²) + eps)."""
    x = np.asarray(x, dtype=np.int64)
    return np.maximum(isqrt(round_div((x * x).sum(-1), x.shape[-1]) + eps_fx), 1)


def norm_quantize(x, k: int, q_max: int, theta: int, eps_fx: int, wide: int = 0, wide_max: int = 0):
    """RMSNorm fused with γ-quantile quantisation (the gain is folded into the next weights).

    The per-token RMS cancels in q; it survives only in ratio = m / rms, applied after the
    spike-driven stage. Returns (q, ratio) with x/rms(x) ≈ q·ratio/(Q·2**RATIO_FRAC).
    A wide group as in `quantize`.
    """
    q, m = quantize(x, k, q_max, theta, wide, wide_max)
    return q, round_div(m << RATIO_FRAC, rms(x, eps_fx))


def ratio_bound(n: int, eps_fx: int) -> int:
    """Largest ratio `norm_quantize` can return for rows of n values, proved: the order statistic
    m is at most max|x| = M and Σx² >= M², so with v = round(Σx²/n) the ratio is at most
    ⌊sqrt((v + 1/2)·n)⌋·2**RATIO_FRAC / max(isqrt(v + eps), 1) (+1 for rounding). Taken over
    v <= 2**20 exactly; above, sqrt(v + 1/2) / (sqrt(v) − 1) < 1.001 bounds it by 1.001·sqrt(n)."""
    v = np.arange(1 << 20, dtype=np.int64)
    m = np.maximum(isqrt((2 * v + 1) * n // 2), 1)
    per_v = (m << RATIO_FRAC) // np.maximum(isqrt(v + eps_fx), 1)
    tail = math.ceil(1.001 * math.sqrt(n) * (1 << RATIO_FRAC))
    return max(int(per_v.max()), tail) + 1


def dequant_normed(acc, scale_fx, ratio, q_max: int):
    """Output (FRAC) of a linear stage fed by `norm_quantize`: acc·s_w·ratio/Q."""
    t = round_div(np.asarray(acc, np.int64) * scale_fx, 1 << (SCALE_FRAC - FRAC))
    return round_div(t * np.asarray(ratio, np.int64)[..., None], q_max << RATIO_FRAC)


def dequant(acc, scale_fx, m, q_max: int):
    """Output (FRAC) of a linear stage fed by `quantize` of a FRAC vector: acc·s_w·m/Q."""
    t = round_div(np.asarray(acc, np.int64) * scale_fx, 1 << SCALE_FRAC)
    return round_div(t * np.asarray(m, np.int64)[..., None], q_max)


def rope(x, cos_fx, sin_fx):
    """Half-split RoPE on the last axis of a FRAC array; cos/sin broadcast (TRIG_FRAC)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate(
        [round_div(x1 * cos_fx - x2 * sin_fx, 1 << TRIG_FRAC), round_div(x1 * sin_fx + x2 * cos_fx, 1 << TRIG_FRAC)],
        axis=-1,
    )


def iexp(x):
    """exp(x) for x <= 0 (FRAC) -> EXP_FRAC, I-BERT's integer-only exponential."""
    x = np.asarray(x, dtype=np.int64)
    z = (-x) // _LN2
    p = x + z * _LN2
    poly = round_div(_EXP_A * (p + _EXP_B) ** 2, 1 << (3 * FRAC - EXP_FRAC)) + _EXP_C
    return np.where(z > _EXP_MAX_SHIFT, 0, poly >> np.minimum(z, _EXP_MAX_SHIFT))


def silu_mul(gate, up):
    """SiLU(gate)·up on FRAC values, sigmoid through `iexp`."""
    one = 1 << EXP_FRAC
    e = iexp(-np.abs(gate))
    sig = np.where(gate >= 0, round_div(one * one, one + e), round_div(e * one, one + e))
    return round_div(round_div(gate * sig, one) * up, 1 << FRAC)


def softmax_quantize(scores, q_max: int, theta: int, valid=None):
    """Integer softmax over the last axis, quantised to unsigned spike counts for P·V.

    scores (..., heads, keys) FRAC; valid (broadcastable bool) masks keys out (causal mask).
    Returns (p, top, total): p in [0, Q], zero where masked, with softmax ≈ p·top/(Q·total);
    top = max of i-exp (EXP_FRAC), total = their sum.
    """
    s = np.asarray(scores, np.int64)
    valid = np.ones(s.shape, bool) if valid is None else np.broadcast_to(valid, s.shape)
    top_score = np.where(valid, s, np.iinfo(np.int64).min).max(-1, keepdims=True)
    e = np.where(valid, iexp(np.where(valid, s - top_score, 0)), 0)
    top = np.maximum(e.max(-1), 1)
    p = np.clip(round_div(e * q_max, top[..., None]), 0, q_max)
    p[p <= theta] = 0
    return p, top, np.maximum(e.sum(-1), 1)


def attention_output(acc, v_range, top, total, q_max: int, kv_max: int):
    """P·V accumulator (..., heads, head_dim) -> attention output (FRAC).

    v_range (heads, head_dim) FRAC: static per-channel range of the cached values.
    """
    t = round_div(np.asarray(acc, np.int64) * np.asarray(v_range, np.int64), kv_max)
    return round_div(t * np.asarray(top, np.int64)[..., None], q_max * np.asarray(total, np.int64)[..., None])


def quantize_static(x, x_range, q_max: int):
    """Quantise with a fixed per-channel range (FRAC): clip(round(x·Q/range))."""
    return np.clip(round_div(np.asarray(x, np.int64) * q_max, np.asarray(x_range, np.int64)), -q_max, q_max)


def score_values(acc, q_scale, k_scale, q_max: int, kv_max: int):
    """Q·Kᵀ accumulator (..., heads, keys) -> scores (FRAC); q_scale (..., heads), k_scale (heads, keys)."""
    t = round_div(np.asarray(acc, np.int64) * np.asarray(q_scale, np.int64)[..., None], q_max)
    return round_div(t * np.asarray(k_scale, np.int64), kv_max << FRAC)


@functools.lru_cache(maxsize=8)
def _sylvester(block: int) -> np.ndarray:
    """The block × block Hadamard matrix in Sylvester order (symmetric), float64."""
    h = np.ones((1, 1))
    while len(h) < block:
        h = np.block([[h, h], [h, -h]])
    return h


def hadamard(x, block: int, shift: int):
    """Blockwise Walsh–Hadamard transform of the last axis (Sylvester order, ±1 entries: additions
    only, log2(block) rounds of butterflies), then a rounded shift right by `shift`."""
    y = np.asarray(x, np.int64)
    lead, n = y.shape[:-1], y.shape[-1]
    if y.size and int(np.abs(y).max()) * block < 1 << 53:  # the same sums, exact in float64, as one product
        blocks = y.reshape(*lead, n // block, block).astype(np.float64) @ _sylvester(block)
        return round_div(blocks.astype(np.int64).reshape(*lead, n), 1 << shift)
    h = 1
    while h < block:
        y = y.reshape(*lead, n // (2 * h), 2, h)
        y = np.stack([y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]], axis=-2)
        h *= 2
    return round_div(y.reshape(*lead, n), 1 << shift)


def saturate(x, limit: int):
    """x clipped to ±limit."""
    return np.clip(np.asarray(x, np.int64), -limit, limit)


def to_fixed(x, frac: int = FRAC):
    """Float array -> fixed-point int64 (host boundary and conversion time only)."""
    return np.round(np.asarray(x, dtype=np.float64) * (1 << frac)).astype(np.int64)
