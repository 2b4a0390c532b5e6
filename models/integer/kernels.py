"""The integer programs of `sdllm.models.integer.fixedpoint`, fused: one compiled pass per function over
whole windows of rows, on every core — the same integers, bit for bit (tested against the numpy
definitions, which stay the specification).

What makes them fast: no temporaries (each row is read once, everything between is in
registers); divisions become float64 divisions with one exact integer correction (`rdiv`:
exact whenever the quotient is below 2**51, far above any value here) instead of int64
divisions, which x86 cannot vectorise; the γ-quantile's order statistic by a 2048-bucket
histogram of the top bits and a sort of one bucket, not a full partition.

Each function keeps `fixedpoint`'s signature and overflow check (an intermediate past 2**62 is
an OverflowError). Windows of at least PARALLEL_ROWS rows run on numba's thread pool; smaller
calls (one token in a Lava worker) run serially, which also keeps forked processes off the pool.
"""

import os
import types

import numpy as np
from numba import njit, prange

from sdllm.models.integer import fixedpoint as fx

PARALLEL_ROWS = 16
_PID = os.getpid()  # a process forked after import (a Lava worker) runs the serial kernels
SHORT_ROW = 256
TOP_KEPT = 64
LIMIT = np.int64(1 << 62)
BUCKET_BITS = 11
_LN2, _EXP_A, _EXP_B, _EXP_C, _EXP_MAX = fx._LN2, fx._EXP_A, fx._EXP_B, fx._EXP_C, fx._EXP_MAX_SHIFT
_EXP_SHIFT = 3 * fx.FRAC - fx.EXP_FRAC
_ONE = np.int64(1 << fx.EXP_FRAC)
_INV_LN2 = 1.0 / _LN2


def _twice(fn):
    """(parallel, serial) compilations of one kernel. The serial one compiles a copy under its own
    name: numba's on-disk cache keys a function by name and signature, not by `parallel`, so one
    function compiled both ways shares one cache entry — a forked Lava worker's "serial" kernel
    could load the parallel code and start a thread pool after fork (the GNU OpenMP layer kills it)."""
    serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__)
    serial.__qualname__ = fn.__qualname__ + "_serial"
    return njit(parallel=True, cache=True, nogil=True)(fn), njit(cache=True, nogil=True)(serial)


@njit(inline="always", cache=True)
def rdiv_inv(n, d, inv):
    """n / d rounded half away from zero (d > 0), given inv = 1 / 2d: floor((2|n| + d) / 2d),
    estimated in float64 and corrected by one exact integer step, with the sign of n."""
    s = n >> 63  # -1 where n < 0: (x ^ s) - s negates there, without a branch
    a = 2 * ((n ^ s) - s) + d
    b = 2 * d
    q = np.int64(np.float64(a) * inv)
    r = a - q * b
    q += np.int64(r >= b) - np.int64(r < 0)
    return (q ^ s) - s


@njit(inline="always", cache=True)
def rdiv(n, d):
    """n / d rounded half away from zero (d > 0)."""
    return rdiv_inv(n, d, 1.0 / np.float64(2 * d))


@njit(inline="always", cache=True)
def rshift(n, s):
    """n / 2**s rounded half away from zero (as `rdiv` by a power of two)."""
    if s == 0:
        return n
    g = n >> 63
    mag = (((n ^ g) - g) + (np.int64(1) << (s - 1))) >> s
    return (mag ^ g) - g


@njit(inline="always", cache=True)
def over(n):
    return abs(n) >= LIMIT


@njit(cache=True)
def kth_abs(x, k):
    """The k-th smallest |x| (0-based) of a row: near the top (γ-quantiles are) by one pass
    keeping the n - k largest; else short rows by a sort, long ones by a histogram of the top
    BUCKET_BITS bits and a sort of the one bucket that holds it."""
    n = x.shape[0]
    m = n - k
    if m <= TOP_KEPT:
        top = np.full(m, np.int64(-1))  # the m largest |x| so far, ascending: top[0] is the answer
        for i in range(n):
            a = abs(x[i])
            if a > top[0]:
                j = 1
                while j < m and top[j] < a:
                    top[j - 1] = top[j]
                    j += 1
                top[j - 1] = a
        return top[0]
    if n <= SHORT_ROW:
        return np.sort(np.abs(x))[k]
    mx = np.int64(0)
    for i in range(n):
        a = abs(x[i])
        if a > mx:
            mx = a
    if mx == 0:
        return np.int64(0)
    width = np.int64(0)
    while (mx >> width) > 0:
        width += 1
    shift = max(width - BUCKET_BITS, np.int64(0))
    counts = np.zeros((1 << BUCKET_BITS) + 1, np.int64)
    for i in range(n):
        counts[abs(x[i]) >> shift] += 1
    seen = np.int64(0)
    bucket = np.int64(0)
    for b in range(counts.shape[0]):
        if seen + counts[b] > k:
            bucket = b
            break
        seen += counts[b]
    cand = np.empty(counts[bucket], np.int64)
    j = 0
    for i in range(n):
        a = abs(x[i])
        if (a >> shift) == bucket:
            cand[j] = a
            j += 1
    cand.sort()
    return cand[k - seen]


def _quantize(x, k, q_max, theta):
    rows, n = x.shape
    q = np.empty((rows, n), np.int64)
    m = np.empty(rows, np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        mr = max(kth_abs(x[r], k), np.int64(1))
        m[r] = mr
        inv = 1.0 / np.float64(2 * mr)
        top = np.int64(0)
        for j in range(n):
            v = x[r, j] * q_max
            top = max(top, abs(v))
            t = min(max(rdiv_inv(v, mr, inv), -q_max), q_max)
            q[r, j] = t if abs(t) > theta else 0
        bad[r] = over(top)
    return q, m, bad


def _norm_quantize(x, k, q_max, theta, eps, wide, wide_max):
    rows, n = x.shape
    q = np.empty((rows, n), np.int64)
    ratio = np.empty(rows, np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        mr = max(kth_abs(x[r, wide:], k), np.int64(1))
        inv = 1.0 / np.float64(2 * mr)
        ss = np.int64(0)
        top = np.int64(0)
        for j in range(n):
            v = x[r, j]
            ss += v * v
            w = v * q_max
            top = max(top, abs(w))
            c = wide_max if j < wide else q_max
            t = min(max(rdiv_inv(w, mr, inv), -c), c)
            q[r, j] = t if abs(t) > theta else 0
        bad[r] = over(top) | over(ss)
        mean = rdiv(ss, np.int64(n)) + eps
        s = np.int64(np.floor(np.sqrt(np.float64(mean))))
        s -= np.int64(s * s > mean)
        s += np.int64((s + 1) * (s + 1) <= mean)
        s = max(s, np.int64(1))
        num = mr << fx.RATIO_FRAC
        bad[r] |= over(num)
        ratio[r] = rdiv(num, s)
    return q, ratio, bad


def _dequant_normed(acc, scale, ratio, denom):
    rows, n = acc.shape
    out = np.empty((rows, n), np.int64)
    bad = np.zeros(rows, np.bool_)
    shift = fx.SCALE_FRAC - fx.FRAC
    inv = 1.0 / np.float64(2 * denom)
    for r in prange(rows):
        rr = ratio[r]
        top = np.int64(0)
        for j in range(n):
            a = acc[r, j] * scale[j]
            t = rshift(a, shift) * rr
            top = max(top, max(abs(a), abs(t)))
            out[r, j] = rdiv_inv(t, denom, inv)
        bad[r] = over(top)
    return out, bad


def _dequant(acc, scale, m, q_max):
    rows, n = acc.shape
    out = np.empty((rows, n), np.int64)
    bad = np.zeros(rows, np.bool_)
    inv = 1.0 / np.float64(2 * q_max)
    for r in prange(rows):
        mr = m[r]
        top = np.int64(0)
        for j in range(n):
            a = acc[r, j] * scale[j]
            t = rshift(a, fx.SCALE_FRAC) * mr
            top = max(top, max(abs(a), abs(t)))
            out[r, j] = rdiv_inv(t, q_max, inv)
        bad[r] = over(top)
    return out, bad


def _rope(x, cos, sin):
    """x (rows, heads, hd), cos/sin (rows, hd/2)."""
    rows, heads, hd = x.shape
    half = hd // 2
    out = np.empty((rows, heads, hd), np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        for h in range(heads):
            top = np.int64(0)
            for j in range(half):
                x1, x2, c, s = x[r, h, j], x[r, h, j + half], cos[r, j], sin[r, j]
                a = x1 * c - x2 * s
                b = x1 * s + x2 * c
                top = max(top, max(abs(a), abs(b)))
                out[r, h, j] = rshift(a, fx.TRIG_FRAC)
                out[r, h, j + half] = rshift(b, fx.TRIG_FRAC)
            bad[r] |= over(top)
    return out, bad


@njit(inline="always", cache=True)
def iexp_abs(a):
    """fixedpoint.iexp(-a) of one a >= 0, without branches or integer divisions (so the loops
    around it vectorise): a // ln2 as a float64 estimate with one exact integer correction."""
    z = np.int64(np.float64(a) * _INV_LN2)
    r = a - z * _LN2
    z += np.int64(r >= _LN2) - np.int64(r < 0)
    p = z * _LN2 - a
    poly = rshift(_EXP_A * (p + _EXP_B) * (p + _EXP_B), _EXP_SHIFT) + _EXP_C  # p + B > 0
    e = poly >> min(z, np.int64(_EXP_MAX))
    return e if z <= _EXP_MAX else np.int64(0)


def _silu_mul(gate, up):
    rows, n = gate.shape
    out = np.empty((rows, n), np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        top = np.int64(0)
        for j in range(n):
            g = gate[r, j]
            e = iexp_abs(abs(g))
            sig = rdiv(_ONE * _ONE if g >= 0 else e * _ONE, _ONE + e)
            a = g * sig
            b = rshift(a, fx.EXP_FRAC) * up[r, j]
            top = max(top, max(abs(a), abs(b)))
            out[r, j] = rshift(b, fx.FRAC)
        bad[r] = over(top)
    return out, bad


def _softmax_quantize(s, last, q_max, theta):
    """s (rows, keys); keys 0..last[r] are valid. Returns p, top, total."""
    rows, keys = s.shape
    p = np.zeros((rows, keys), np.int64)
    top = np.empty(rows, np.int64)
    total = np.empty(rows, np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        e = np.empty(keys, np.int64)
        n = min(last[r] + 1, keys)
        best = s[r, 0]
        for j in range(1, n):
            best = max(best, s[r, j])
        tmax, tsum = np.int64(0), np.int64(0)
        for j in range(n):
            v = iexp_abs(best - s[r, j])
            e[j] = v
            tmax = max(tmax, v)
            tsum += v
        tmax = max(tmax, np.int64(1))
        top[r], total[r] = tmax, max(tsum, np.int64(1))
        inv = 1.0 / np.float64(2 * tmax)
        for j in range(n):
            t = min(max(rdiv_inv(e[j] * q_max, tmax, inv), np.int64(0)), q_max)
            p[r, j] = t if t > theta else 0
    return p, top, total, bad


def _score_values(acc, q_scale, k_scale, q_max, denom):
    """acc (rows, heads, keys), q_scale (rows, heads), k_scale (heads, keys)."""
    rows, heads, keys = acc.shape
    out = np.empty((rows, heads, keys), np.int64)
    bad = np.zeros(rows, np.bool_)
    inv_q, inv_d = 1.0 / np.float64(2 * q_max), 1.0 / np.float64(2 * denom)
    for r in prange(rows):
        top = np.int64(0)
        for h in range(heads):
            qs = q_scale[r, h]
            for j in range(keys):
                a = acc[r, h, j] * qs
                t = rdiv_inv(a, q_max, inv_q) * k_scale[h, j]
                top = max(top, max(abs(a), abs(t)))
                out[r, h, j] = rdiv_inv(t, denom, inv_d)
        bad[r] = over(top)
    return out, bad


def _attention_output(acc, v_range, top, total, q_max, kv_max):
    """acc (rows, heads, hd), v_range (heads, hd), top/total (rows, heads)."""
    rows, heads, hd = acc.shape
    out = np.empty((rows, heads, hd), np.int64)
    bad = np.zeros(rows, np.bool_)
    inv_kv = 1.0 / np.float64(2 * kv_max)
    for r in prange(rows):
        big = np.int64(0)
        for h in range(heads):
            tp, den = top[r, h], q_max * total[r, h]
            inv = 1.0 / np.float64(2 * den)
            for j in range(hd):
                a = acc[r, h, j] * v_range[h, j]
                t = rdiv_inv(a, kv_max, inv_kv) * tp
                big = max(big, max(abs(a), abs(t)))
                out[r, h, j] = rdiv_inv(t, den, inv)
        bad[r] = over(big)
    return out, bad


def _quantize_static(x, x_range, q_max):
    rows, n = x.shape
    out = np.empty((rows, n), np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        top = np.int64(0)
        for j in range(n):
            v = x[r, j] * q_max
            top = max(top, abs(v))
            out[r, j] = min(max(rdiv(v, x_range[j]), -q_max), q_max)
        bad[r] = over(top)
    return out, bad


@njit(inline="always", cache=True)
def _wht8(y, b, s):
    """The 8-point Walsh–Hadamard butterflies of y[b], y[b+s], ..., y[b+7s], in place."""
    a0, a1, a2, a3 = y[b], y[b + s], y[b + 2 * s], y[b + 3 * s]
    a4, a5, a6, a7 = y[b + 4 * s], y[b + 5 * s], y[b + 6 * s], y[b + 7 * s]
    b0, b1, b2, b3, b4, b5, b6, b7 = a0 + a1, a0 - a1, a2 + a3, a2 - a3, a4 + a5, a4 - a5, a6 + a7, a6 - a7
    c0, c1, c2, c3, c4, c5, c6, c7 = b0 + b2, b1 + b3, b0 - b2, b1 - b3, b4 + b6, b5 + b7, b4 - b6, b5 - b7
    y[b], y[b + s], y[b + 2 * s], y[b + 3 * s] = c0 + c4, c1 + c5, c2 + c6, c3 + c7
    y[b + 4 * s], y[b + 5 * s], y[b + 6 * s], y[b + 7 * s] = c0 - c4, c1 - c5, c2 - c6, c3 - c7


def _hadamard(x, block, shift):
    """Blockwise fast Walsh–Hadamard transform of each row (radix-8 butterflies while the block
    allows, then radix 2: the same sums in a third of the passes), then a rounded shift."""
    rows, n = x.shape
    out = np.empty((rows, n), np.int64)
    bad = np.zeros(rows, np.bool_)
    for r in prange(rows):
        y = x[r].copy()
        h = 1
        while h * 8 <= block:
            for i in range(0, n, 8 * h):
                for j in range(i, i + h):
                    _wht8(y, j, h)
            h *= 8
        while h < block:
            for i in range(0, n, 2 * h):
                for j in range(i, i + h):
                    a, c = y[j], y[j + h]
                    y[j], y[j + h] = a + c, a - c
            h *= 2
        top = np.int64(0)
        for j in range(n):
            top = max(top, abs(y[j]))
            out[r, j] = rshift(y[j], shift)
        bad[r] = over(top)
    return out, bad


_QUANTIZE = _twice(_quantize)
_NORM_QUANTIZE = _twice(_norm_quantize)
_DEQUANT_NORMED = _twice(_dequant_normed)
_DEQUANT = _twice(_dequant)
_ROPE = _twice(_rope)
_SILU_MUL = _twice(_silu_mul)
_SOFTMAX = _twice(_softmax_quantize)
_SCORES = _twice(_score_values)
_ATTN_OUT = _twice(_attention_output)
_QUANTIZE_STATIC = _twice(_quantize_static)
_HADAMARD = _twice(_hadamard)


def _rows(a, tail: int = 1):
    """An int64 C-contiguous view of a as (rows, *last `tail` axes), and its leading shape."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    lead = a.shape[: a.ndim - tail]
    return a.reshape(-1, *a.shape[a.ndim - tail:]), lead


def _pick(kernels, rows: int):
    """The parallel compilation for a window in the importing process, else the serial one."""
    return kernels[0 if rows >= PARALLEL_ROWS and os.getpid() == _PID else 1]


def _call(kernels, rows: int, *args):
    out = _pick(kernels, rows)(*args)
    if out[-1].any():
        raise OverflowError("fixed-point intermediate exceeds 2**62")
    return out[:-1]


def quantize(x, k: int, q_max: int, theta: int):
    x2, lead = _rows(x)
    q, m = _call(_QUANTIZE, len(x2), x2, np.int64(k), np.int64(q_max), np.int64(theta))
    return q.reshape(*lead, -1), m.reshape(lead)


def norm_quantize(x, k: int, q_max: int, theta: int, eps_fx: int, wide: int = 0, wide_max: int = 0):
    x2, lead = _rows(x)
    q, ratio = _call(_NORM_QUANTIZE, len(x2), x2, np.int64(k), np.int64(q_max), np.int64(theta), np.int64(eps_fx),
                     np.int64(wide), np.int64(wide_max))
    return q.reshape(*lead, -1), ratio.reshape(lead)


def dequant_normed(acc, scale_fx, ratio, q_max: int):
    a2, lead = _rows(acc)
    r2 = np.ascontiguousarray(np.broadcast_to(ratio, lead), np.int64).reshape(-1)
    (out,) = _call(_DEQUANT_NORMED, len(a2), a2, np.ascontiguousarray(scale_fx, np.int64), r2,
                   np.int64(q_max << fx.RATIO_FRAC))
    return out.reshape(*lead, -1)


def dequant(acc, scale_fx, m, q_max: int):
    a2, lead = _rows(acc)
    m2 = np.ascontiguousarray(np.broadcast_to(m, lead), np.int64).reshape(-1)
    (out,) = _call(_DEQUANT, len(a2), a2, np.ascontiguousarray(scale_fx, np.int64), m2, np.int64(q_max))
    return out.reshape(*lead, -1)


def rope(x, cos_fx, sin_fx):
    """x (..., heads, hd); cos/sin (..., 1, hd/2) as `DecoderLayerUnit` passes them."""
    x3, lead = _rows(x, 2)
    cos = np.ascontiguousarray(np.broadcast_to(cos_fx, (*lead, 1, x.shape[-1] // 2)), np.int64).reshape(len(x3), -1)
    sin = np.ascontiguousarray(np.broadcast_to(sin_fx, (*lead, 1, x.shape[-1] // 2)), np.int64).reshape(len(x3), -1)
    (out,) = _call(_ROPE, len(x3), x3, cos, sin)
    return out.reshape(*lead, *x.shape[-2:])


def silu_mul(gate, up):
    g2, lead = _rows(gate)
    u2, _ = _rows(up)
    (out,) = _call(_SILU_MUL, len(g2), g2, u2)
    return out.reshape(*lead, -1)


def softmax_quantize(scores, q_max: int, theta: int, valid=None):
    """As fixedpoint.softmax_quantize, for the causal masks `units.causal` makes: a row's valid
    keys are 0..last (given as `valid`, broadcastable to scores, a prefix in every row)."""
    s2, lead = _rows(scores)
    keys = s2.shape[-1]
    if valid is None:
        last = np.full(len(s2), keys - 1, np.int64)
    else:
        v = np.broadcast_to(valid, scores.shape).reshape(len(s2), keys)
        last = v.sum(-1).astype(np.int64) - 1
        if not np.array_equal(v, np.arange(keys) <= last[:, None]):
            raise ValueError("kernels.softmax_quantize: valid keys must be a prefix of each row")
    p, top, total = _call(_SOFTMAX, len(s2), s2, last, np.int64(q_max), np.int64(theta))
    return p.reshape(scores.shape), top.reshape(lead), total.reshape(lead)


def score_values(acc, q_scale, k_scale, q_max: int, kv_max: int):
    a3, lead = _rows(acc, 2)
    qs = np.ascontiguousarray(np.broadcast_to(q_scale, acc.shape[:-1]), np.int64).reshape(len(a3), -1)
    ks = np.ascontiguousarray(np.broadcast_to(k_scale, acc.shape[-2:]), np.int64)
    (out,) = _call(_SCORES, len(a3), a3, qs, ks, np.int64(q_max), np.int64(kv_max << fx.FRAC))
    return out.reshape(acc.shape)


def attention_output(acc, v_range, top, total, q_max: int, kv_max: int):
    a3, lead = _rows(acc, 2)
    vr = np.ascontiguousarray(np.broadcast_to(v_range, acc.shape[-2:]), np.int64)
    tp = np.ascontiguousarray(np.broadcast_to(top, acc.shape[:-1]), np.int64).reshape(len(a3), -1)
    tt = np.ascontiguousarray(np.broadcast_to(total, acc.shape[:-1]), np.int64).reshape(len(a3), -1)
    (out,) = _call(_ATTN_OUT, len(a3), a3, vr, tp, tt, np.int64(q_max), np.int64(kv_max))
    return out.reshape(acc.shape)


def quantize_static(x, x_range, q_max: int):
    """x (..., *range axes), x_range over x's trailing axes (per channel, or per head and channel)."""
    tail = max(np.ndim(x_range), 1)
    xr = np.ascontiguousarray(np.broadcast_to(x_range, x.shape[x.ndim - tail:]), np.int64).reshape(-1)
    x2, _ = _rows(x, tail)
    (out,) = _call(_QUANTIZE_STATIC, len(x2), x2.reshape(len(x2), -1), xr, np.int64(q_max))
    return out.reshape(x.shape)


def hadamard(x, block: int, shift: int):
    x2, lead = _rows(x)
    (out,) = _call(_HADAMARD, len(x2), x2, np.int64(block), np.int64(shift))
    return out.reshape(*lead, -1)
