"""A single-process lockstep simulator of a build: every core in one group (`runtime.group`),
the same behaviours and routing tables as the Lava graph, without Lava's per-process barrier.
(The fast backend, `runtime.fast`, runs the same build without stepping it.)"""

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
