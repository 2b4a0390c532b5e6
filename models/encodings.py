"""Spike codes for a b-bit integer activation q ∈ [−Q, Q], Q = 2**(b−1) − 1, side by side.

A code sends q as a train s_0 .. s_{T−1}; the synapse core adds scale_t · W·s_t at step t and,
for offset codes, the neuron subtracts offset · Σ_i W_ji once per window (a bias it holds, no
SOPs), so that the window leaves exactly W·q.

  ternary   the paper's bidirectional ternary count code: |q| spikes of sign(q), T = Q.
  unsigned  unsigned count code, the baseline ternary halves: q + Q spikes of +1, T = 2Q,
            offset Q — a silent value (q = 0) still fires Q spikes.
  bitplane  signed bit planes: step t sends sign(q) if bit t of |q| is set, scale 2**t
            (Loihi's per-synapse-group weight exponent), T = b − 1, popcount(|q|) spikes.
  graded    Loihi 2 graded spikes: one spike carrying q, T = 1; each synaptic op is a
            multiply-accumulate, not an add.
"""

from dataclasses import dataclass

import numpy as np


def _qmax(bits: int) -> int:
    if not 2 <= bits <= 16:
        raise ValueError(f"spike code: bits must be within 2..16, got {bits}")
    return (1 << (bits - 1)) - 1


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
    adds_only: bool

    def timesteps(self, bits: int) -> int:
        q = _qmax(bits)
        return {"ternary": q, "unsigned": 2 * q, "bitplane": bits - 1, "graded": 1}[self.name]

    def offset(self, bits: int) -> int:
        return _qmax(bits) if self.name == "unsigned" else 0

    def step_scale(self, bits: int):
        t = self.timesteps(bits)
        return (1 << np.arange(t, dtype=np.int64)) if self.name == "bitplane" else np.ones(t, np.int64)

    def _check(self, q, bits: int):
        q = np.asarray(q, np.int64)
        q_max = _qmax(bits)
        if q.size and np.abs(q).max() > q_max:
            raise ValueError(f"{self.name} code: |q| must be at most {q_max} for {bits}-bit values, got {int(np.abs(q).max())}")
        return q

    def encode(self, q, bits: int):
        """The spike train, time first: (T, *q.shape)."""
        q = self._check(q, bits)
        t = np.arange(self.timesteps(bits)).reshape(-1, *([1] * q.ndim))
        if self.name == "ternary":
            return np.where(t < np.abs(q), np.sign(q), 0)
        if self.name == "unsigned":
            return (t < q + self.offset(bits)).astype(np.int64)
        if self.name == "bitplane":
            return np.sign(q) * ((np.abs(q) >> t) & 1)
        return q[None].copy()

    def spikes(self, q, bits: int):
        """Non-zero events per neuron in the window."""
        q = self._check(q, bits)
        if self.name == "ternary":
            return np.abs(q)
        if self.name == "unsigned":
            return q + self.offset(bits)
        if self.name == "bitplane":
            return _popcount(np.abs(q))
        return (q != 0).astype(np.int64)


CODES = {name: Code(name, name != "graded") for name in ("ternary", "unsigned", "bitplane", "graded")}


def decode(train, code: Code, bits: int):
    """Σ_t scale_t · s_t − offset: what the synapses integrate, per neuron."""
    scale = code.step_scale(bits).reshape(-1, *([1] * (np.ndim(train) - 1)))
    return (scale * np.asarray(train, np.int64)).sum(0) - code.offset(bits)


def sops(q, fanout, code: Code, bits: int) -> int:
    """Synaptic operations of one window: Σ over neurons of spikes × fan-out."""
    return int((code.spikes(q, bits) * np.asarray(fanout)).sum())
