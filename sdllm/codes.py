"""Spike codes for a b-bit integer activation q ∈ [−Q, Q], Q = 2**(b−1) − 1 — part of the
numeric contract (docs/DESIGN.md §2): model.pt and builds name the code of every quantisation point.

A code sends q as a train s_0 .. s_{T−1}; the synapse core adds scale_t · W·s_t at step t and,
for offset codes, the neuron subtracts offset · Σ_i W_ji once per window (a bias it holds, no
SOPs), so that the window leaves exactly W·q.

  ternary   the paper's bidirectional ternary count code: |q| spikes of sign(q), T = Q.
  unsigned  unsigned count code, the baseline ternary halves: q + Q spikes of +1, T = 2Q,
            offset Q — the bias costs no SOPs, but a silent value (q = 0) still fires Q spikes,
            so SOPs are far higher than ternary's.
  bitplane  signed bit planes, most significant first: step t sends sign(q) if bit T−1−t of |q|
            is set, T = b − 1, popcount(|q|) spikes. The core doubles its accumulator before
            each step's sum (radix 2: a shift in the neuron update it does anyway), so the
            window leaves Σ_t 2**(T−1−t) · W·s_t = W·q with additions only.
  naf       signed-digit planes: the non-adjacent form of q, digits d_t ∈ {−1, 0, +1} most
            significant first (the paper's bidirectional spikes, per plane), no two adjacent
            digits non-zero: T = b steps (one more than bit planes), radix 2, and on average a
            third of the planes fire instead of half (7 = 8 − 1: two spikes, not three).
  graded    Loihi 2 graded spikes: one spike carrying q as a b-bit payload, T = 1, one event
            per non-zero q; each synaptic op is a multiply-accumulate, not an add.

Which code carries a point is the compiler's choice (`sdllm.compiler.code_choice`), among the
codes a compiled network can use (`CARRIED`) and the target accepts; `for_bits` is the reference
choice where no compiler chose (the paper's ternary trains up to 4 bits, bit planes above) and
`unsigned` is compared in `sdllm-eval` only. Unsigned values (softmax probabilities, 0..Q) go in
the same codes with no negative spikes. All arrays are numpy int64; q has any shape (..., n)
and trains are time first, (T, ..., n).
"""

from dataclasses import dataclass

import numpy as np

NAMES = ("ternary", "unsigned", "bitplane", "naf", "graded")
CARRIED = ("ternary", "bitplane", "naf", "graded")  # the codes a compiled network may use
CHOICES = ("auto", "paper", *CARRIED)  # what `sdllm-compile --code` takes: the compiler's choice, the paper's, or one code
TERNARY_MAX_BITS = 4  # above this many bits, `for_bits` carries a point in bit planes


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed integer of `bits` bits: 2**(bits-1) - 1."""
    return (1 << (bits - 1)) - 1


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.int64)


def _popcount(a):
    """Set bits of each non-negative integer: a table per byte (every code here is below 2**16)."""
    a = np.asarray(a, np.int64)
    if a.size and (a.min() < 0 or a.max() >= 1 << 16):
        raise ValueError("popcount: values must be within 0..65535")
    return _BYTE_BITS[a & 0xFF] + _BYTE_BITS[a >> 8]


def _naf_digits(m, steps: int):
    """The non-adjacent form of magnitudes m >= 0, most significant digit first: (steps, *m.shape)."""
    m = np.array(m, np.int64)
    digits = np.zeros((steps, *m.shape), np.int64)
    for k in range(steps):  # least significant first: an odd m takes the digit that leaves m − d divisible by 4
        d = np.where(m & 1, 2 - (m & 3), 0)
        digits[steps - 1 - k] = d
        m = (m - d) >> 1
    return digits


@dataclass(frozen=True)
class Code:
    name: str
    adds_only: bool  # False: each synaptic op is a multiply-accumulate

    def qmax(self, bits: int) -> int:
        if not 2 <= bits <= 16:
            raise ValueError(f"{self.name} code: bits must be within 2..16, got {bits}")
        return qmax(bits)

    def timesteps(self, bits: int) -> int:
        q = self.qmax(bits)
        return {"ternary": q, "unsigned": 2 * q, "bitplane": bits - 1, "naf": bits, "graded": 1}[self.name]

    def event_max(self, bits: int) -> int:
        """Largest |value| one step of a train carries on an axon: Q for graded spikes, else 1."""
        return self.qmax(bits) if self.name == "graded" else 1

    def offset(self, bits: int) -> int:
        """Constant the neuron subtracts once per window (times Σ_i W_ji): no SOPs."""
        return self.qmax(bits) if self.name == "unsigned" else 0

    @property
    def radix(self) -> int:
        """What the accumulator is multiplied by before each step's sum: 2 for bit planes (most
        significant first), 1 for counts."""
        return 2 if self.name in ("bitplane", "naf") else 1

    def step_scale(self, bits: int):
        """(T,) weight of each step in the window's sum: 2**(T-1-t) for planes, else 1."""
        t = self.timesteps(bits)
        return (1 << np.arange(t - 1, -1, -1, dtype=np.int64)) if self.radix == 2 else np.ones(t, np.int64)

    def check(self, q, bits: int):
        """q as int64; ValueError if any |q| > Q."""
        q = np.asarray(q)
        if q.dtype.kind not in "iu":
            raise TypeError(f"{self.name} code: q must be an integer array, got dtype {q.dtype}")
        q = q.astype(np.int64, copy=False)
        q_max = self.qmax(bits)
        if q.size and (q.max() > q_max or q.min() < -q_max):
            bad = q[np.abs(q) > q_max]
            raise ValueError(f"{self.name} code: |q| must be at most {q_max} for {bits}-bit values, got {int(bad[0])}")
        return q

    def encode(self, q, bits: int):
        """The spike train, time first: (T, *q.shape)."""
        q = self.check(q, bits)
        t = np.arange(self.timesteps(bits), dtype=np.int64).reshape(-1, *([1] * q.ndim))
        if self.name == "ternary":
            return np.where(t < np.abs(q), np.sign(q), 0)
        if self.name == "unsigned":
            return (t < q + self.offset(bits)).astype(np.int64)
        if self.name == "bitplane":
            return np.sign(q) * ((np.abs(q) >> (self.timesteps(bits) - 1 - t)) & 1)
        if self.name == "naf":
            return np.sign(q) * _naf_digits(np.abs(q), self.timesteps(bits))
        return q[None].copy()

    def spikes(self, q, bits: int):
        """Non-zero events per neuron in the window, shape of q."""
        q = self.check(q, bits)
        if self.name == "ternary":
            return np.abs(q)
        if self.name == "unsigned":
            return q + self.offset(bits)
        if self.name == "bitplane":
            return _popcount(np.abs(q))
        if self.name == "naf":
            m = np.abs(q)
            return _popcount(((3 * m) ^ m) >> 1)  # the non-zero digits of m's non-adjacent form
        return (q != 0).astype(np.int64)


CODES = {name: Code(name, adds_only=name != "graded") for name in NAMES}


def reference(bits: int) -> str:
    """The paper's code for a b-bit point — its bidirectional ternary trains up to 4 bits, bit
    planes above (an 8-bit value in 7 steps, not 127) — and the one SOPs and timesteps are
    reported in where no compiler chose one (a model's own evaluation)."""
    return "ternary" if bits <= TERNARY_MAX_BITS else "bitplane"


def steps(code: str, bits: int) -> int:
    """Timesteps of a b-bit value's train in a code."""
    return CODES[code].timesteps(bits)


def graded_pieces(value_bits: int, payload_bits: int) -> tuple:
    """(pieces, piece_bits): how graded spikes of payload_bits signed bits carry a value of
    value_bits signed bits — one spike per piece, each piece payload_bits − 1 magnitude bits."""
    piece_bits = payload_bits - 1
    return -(-(value_bits - 1) // piece_bits), piece_bits


def split_pieces(x, pieces: int, piece_bits: int):
    """Signed integers |x| < 2**(pieces·piece_bits) as `pieces` digits, least significant first,
    each with x's sign: x = Σ_k d_k · 2**(k·piece_bits), |d_k| < 2**piece_bits but the top digit
    (whatever is left). (..., n) -> (..., pieces·n), digit-major. The upper digits of small
    values are zero: graded spikes not sent."""
    x = np.asarray(x, np.int64)
    sign, mag = np.sign(x), np.abs(x)
    mask = (1 << piece_bits) - 1
    digits = [sign * ((mag >> (k * piece_bits)) & mask) for k in range(pieces - 1)]
    return np.concatenate(digits + [sign * (mag >> ((pieces - 1) * piece_bits))], axis=-1)


def join_pieces(d, pieces: int, piece_bits: int):
    """`split_pieces`' inverse: (..., pieces·n) -> (..., n)."""
    parts = np.split(np.asarray(d, np.int64), pieces, axis=-1)
    return sum(p << (k * piece_bits) for k, p in enumerate(parts))


def piece_max(value_max: int, pieces: int, piece_bits: int) -> int:
    """Largest |digit| `split_pieces` gives for |x| <= value_max."""
    lower = min(value_max, (1 << piece_bits) - 1) if pieces > 1 else 0
    return max(value_max >> ((pieces - 1) * piece_bits), lower)


def decode(train, code: Code, bits: int):
    """Σ_t scale_t · s_t − offset: what the synapses integrate, per neuron."""
    train = np.asarray(train, np.int64)
    scale = code.step_scale(bits)
    if train.shape[:1] != scale.shape:
        raise ValueError(f"{code.name} code: train has {train.shape[:1]} steps, {bits}-bit values need {len(scale)}")
    return (scale.reshape(-1, *([1] * (train.ndim - 1))) * train).sum(0) - code.offset(bits)


def sops(q, fanout, code: Code, bits: int) -> int:
    """Synaptic operations of one window: Σ over neurons of spikes × fan-out; q (..., n), fanout (n,)."""
    n = code.spikes(q, bits)
    fanout = np.asarray(fanout, np.int64)
    if fanout.shape != n.shape[-1:]:
        raise ValueError(f"{code.name} code: fanout shape {fanout.shape} does not match q's last axis {n.shape[-1:]}")
    return int((n * fanout).sum())


def timesteps_table(bits_list=(2, 4, 8)) -> dict:
    """{code: {bits: (T, adds_only)}}."""
    return {name: {b: (c.timesteps(b), c.adds_only) for b in bits_list} for name, c in CODES.items()}
