"""A single-process lockstep simulator of a build: every core in one group (`runtime.group`),
the same behaviours and routing tables as the Lava graph, without Lava's per-process barrier."""

import numpy as np

from sdllm.runtime.group import make_groups
from sdllm.runtime.result import RunResult


def run_lockstep(build, prompt, n_new: int) -> RunResult:
    n_positions = len(prompt) + n_new - 1
    steps = n_positions * build.schedule["period"]
    (group,) = make_groups(build, "all", n_positions, prompt)
    nothing = np.zeros(group.n_axons, np.int64)
    for t in range(steps):
        group.step(t, nothing)
    host = group.host()
    return RunResult(tokens=[int(t) for t in host.tokens], logits=host.logits, core_sops=group.sops(), timesteps=steps,
                     traffic=group.traffic)


def run_fast(build, prompt, n_new: int) -> RunResult:
    """The fast backend: lockstep with every spike train collapsed to one step of counts.

    Same synapse tables, routing, unit programs and SOP counts; `timesteps` reports what the
    compiled schedule takes on hardware, not the collapsed steps simulated here.
    """
    result = run_lockstep(build.with_collapsed_windows(), prompt, n_new)
    result.timesteps = (len(prompt) + n_new - 1) * build.schedule["period"]
    result.traffic = None  # collapsed trains send counts, not spikes: packet counts would not be the hardware's
    return result
