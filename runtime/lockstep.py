"""A single-process lockstep simulator of a build: the same core behaviours and routing
tables as the Lava graph, without Lava's one-OS-process-per-core barrier. Used to check the
Lava run and to localise a mismatch to one core."""

import numpy as np
from sdllm.runtime.behaviours import make_behaviour
from sdllm.runtime.result import RunResult


def run_lockstep(build, prompt, n_new: int) -> RunResult:
    n_positions = len(prompt) + n_new - 1
    steps = n_positions * build.schedule["period"]
    behaviours = [make_behaviour(c, build, n_positions, prompt) for c in build.cores]
    host = build.host()
    outputs = [np.zeros(c.n_neurons, np.int64) for c in build.cores]
    outputs[host.id] = behaviours[host.id].first_output()
    for t in range(steps):
        inbox = [np.zeros(c.n_axons, np.int64) for c in build.cores]
        for core, y in zip(build.cores, outputs):
            for dest, src, dst in core.routes:
                inbox[dest][dst] += y[src]
        outputs = [b.step(t, x) for b, x in zip(behaviours, inbox)]
    hb = behaviours[host.id]
    sops = {c.name: b.sops for c, b in zip(build.cores, behaviours) if c.type != "host_io"}
    return RunResult(tokens=[int(t) for t in hb.tokens], logits=hb.logits, core_sops=sops, timesteps=steps)
