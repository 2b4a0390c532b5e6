"""What a run returns, whichever backend ran it."""

from dataclasses import dataclass

import numpy as np


@dataclass
class RunResult:
    tokens: list  # prompt + generated (up to and including the end-of-sequence token, where it stopped there)
    logits: np.ndarray  # (positions, vocab) FRAC ints
    core_sops: dict  # core name -> SOPs per position
    timesteps: int
    traffic: np.ndarray | None  # (positions, 3): NoC packets, packet-hops, chip crossings (None: not counted)
    stepped: bool = True  # False: the fast executor, which computes the timesteps without simulating them
    core_spikes: dict | None = None  # core name -> non-zero outputs sent per position (spikes, graded payloads)
    chip_packets: list | None = None  # [(source chip, destination chip, packets over the run)]

    def sops_per_token(self) -> np.ndarray:
        return np.sum(list(self.core_sops.values()), axis=0)
