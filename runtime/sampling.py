"""Choosing the next token from a row of logits: greedy, or sampled with temperature, top-k and
top-p (nucleus).

A `Sampler` is a pure function of (logits row, position): the logits are exact integers (FRAC
fixed point) that every backend computes bit for bit alike, and the random draw comes from a
generator seeded with (seed, position) — so Lava, lockstep, fast and the integer reference pick
the same tokens for a seed, wherever the host that samples runs (in Lava, a worker process).
"""

from dataclasses import dataclass

import numpy as np

from sdllm import arguments
from sdllm.models.integer.fixedpoint import FRAC


@dataclass(frozen=True)
class Sampler:
    """temperature 0: greedy (the largest logit; on a tie the lowest id). Otherwise softmax of
    logits / temperature over the top_k largest (0: all), cut to the smallest set whose
    probability reaches top_p, then one draw from a generator seeded with (seed, position)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        """Every backend and the Lava Process sample through a Sampler: its checks are theirs."""
        arguments.number("--temperature", self.temperature, 0, None, "a finite number >= 0 (0: greedy)")
        arguments.integer("--top-k", self.top_k, 0, None, "an integer >= 0 (0: no limit)")
        arguments.number("--top-p", self.top_p, 0, 1, "a number in (0, 1]", lo_open=True)
        arguments.integer("--seed", self.seed, 0, (1 << 63) - 1, "an integer in 0..2**63-1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def __call__(self, logits, position: int) -> int:
        row = np.asarray(logits, np.int64).reshape(-1)
        if self.greedy:
            return int(np.argmax(row))
        order = np.argsort(-row, kind="stable")  # largest first, ties by id
        if self.top_k:
            order = order[: self.top_k]
        z = (row[order] - row[order[0]]).astype(np.float64) / ((1 << FRAC) * self.temperature)
        p = np.exp(z)
        p /= p.sum()
        if self.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(p), self.top_p)) + 1  # the smallest head reaching top_p
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        u = np.random.default_rng([self.seed, int(position)]).random()
        return int(order[min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(order) - 1)])

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed}


GREEDY = Sampler()
