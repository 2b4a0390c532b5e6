"""Spike codes for a b-bit integer activation q ∈ [−Q, Q], Q = 2**(b−1) − 1, side by side.

A code sends q as a train s_0 .. s_{T−1}; the synapse core adds scale_t · W·s_t at step t and,
for offset codes, the neuron subtracts offset · Σ_i W_ji once per window (a bias it holds, no
SOPs), so that the window leaves exactly W·q.

  ternary   the paper's bidirectional ternary count code: |q| spikes of sign(q), T = Q.
  unsigned  unsigned count code, the baseline ternary halves: q + Q spikes of +1, T = 2Q,
            offset Q — the bias costs no SOPs, but a silent value (q = 0) still fires Q spikes,
            so SOPs are far higher than ternary's.
  bitplane  signed bit planes: step t sends sign(q) if bit t of |q| is set, scale 2**t
            (Loihi's per-synapse-group weight exponent), T = b − 1, popcount(|q|) spikes.
  graded    Loihi 2 graded spikes: one spike carrying q as a b-bit payload, T = 1, one event
            per non-zero q; each synaptic op is a multiply-accumulate, not an add.

All arrays are numpy int64; q has any shape (..., n) and trains are time first, (T, ..., n).
"""

from dataclasses import dataclass

import numpy as np

from sdllm.models import fixedpoint as fx

NAMES = ("ternary", "unsigned", "bitplane", "graded")


def _popcount(a):
    a = np.asarray(a, np.int64).copy()
    n = np.zeros_like(a)
    while a.any():
        n += a & 1
        a >>= 1
    return n


@dataclass(frozen=True)
class Code:
    name: str
    adds_only: bool  # False: each synaptic op is a multiply-accumulate

    def qmax(self, bits: int) -> int:
        if not 2 <= bits <= 16:
            raise ValueError(f"{self.name} code: bits must be within 2..16, got {bits}")
        return fx.qmax(bits)

    def timesteps(self, bits: int) -> int:
        q = self.qmax(bits)
        return {"ternary": q, "unsigned": 2 * q, "bitplane": bits - 1, "graded": 1}[self.name]

    def offset(self, bits: int) -> int:
        """Constant the neuron subtracts once per window (times Σ_i W_ji): no SOPs."""
        return self.qmax(bits) if self.name == "unsigned" else 0

    def step_scale(self, bits: int):
        """(T,) weight of each step: 2**t for bit planes (a weight exponent), else 1."""
        t = self.timesteps(bits)
        return (1 << np.arange(t, dtype=np.int64)) if self.name == "bitplane" else np.ones(t, np.int64)

    def check(self, q, bits: int):
        """q as int64; ValueError if any |q| > Q."""
        q = np.asarray(q)
        if q.dtype.kind not in "iu":
            raise TypeError(f"{self.name} code: q must be an integer array, got dtype {q.dtype}")
        q = q.astype(np.int64)
        q_max = self.qmax(bits)
        bad = q[np.abs(q) > q_max]
        if bad.size:
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
            return np.sign(q) * ((np.abs(q) >> t) & 1)
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
        return (q != 0).astype(np.int64)


CODES = {name: Code(name, adds_only=name != "graded") for name in NAMES}


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
