"""What a run returns, whichever backend ran it."""

from dataclasses import dataclass

import numpy as np


@dataclass
class RunResult:
    tokens: list  # prompt + generated (up to and including the end-of-sequence token, where it stopped there)
    logits: np.ndarray  # (positions, vocab) FRAC ints
    core_sops: dict  # core name -> SOPs per position
    timesteps: int  # from the run's first step to this sequence's last logits (in a batch: its own last)
    traffic: np.ndarray | None  # (positions, 3): NoC packets, packet-hops, chip crossings (None: not counted)
    stepped: bool = True  # False: the fast executor, which computes the timesteps without simulating them
    core_spikes: dict | None = None  # core name -> non-zero outputs sent per position (spikes, graded payloads)
    chip_packets: list | None = None  # [(source chip, destination chip, packets over the run)] (None: a batch's sequence)

    def sops_per_token(self) -> np.ndarray:
        return np.sum(list(self.core_sops.values()), axis=0)


def per_sequence(timeline, prompts: list, kept: list, chosen: np.ndarray, logits: np.ndarray,
                 core_sops: dict, traffic, core_spikes: dict, chip_packets) -> list:
    """A stepped run's figures per position (`Timeline.positions`) cut into each sequence's
    `RunResult`: its prompt and the tokens its positions' logits chose, its first kept positions.
    chip_packets (a whole run's) go with a run of one sequence only."""
    out = []
    for (first, _), prompt, n in zip(timeline.sequences, prompts, kept):
        keep = slice(first, first + n)
        generated = chosen[first + len(prompt) - 1: first + n]
        out.append(RunResult(
            tokens=[int(t) for t in prompt] + [int(t) for t in generated], logits=logits[keep].copy(),
            core_sops={k: v[keep].copy() for k, v in core_sops.items()}, timesteps=timeline.done(first + n - 1),
            traffic=None if traffic is None else traffic[keep].copy(),
            core_spikes={k: v[keep].copy() for k, v in core_spikes.items()},
            chip_packets=chip_packets if len(prompts) == 1 else None))
    return out
