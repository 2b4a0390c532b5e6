"""Build a Lava process graph from a build directory and run it on Loihi2SimCfg('fixed_pt')."""

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from sdllm.runtime.behaviours import make_behaviour
from sdllm.runtime.lava_procs.cores import core_classes
from sdllm.runtime.result import RunResult


def build_processes(build, prompt, n_positions: int):
    """One Lava Process per core, connected as the routing tables say."""
    procs, models = {}, {}
    for core in build.cores:
        behaviour = make_behaviour(core, build, n_positions, prompt)
        dest_axons = [build.cores[d].n_axons for d, _, _ in core.routes]
        routes = [(src, dst) for _, src, dst in core.routes]
        host = core.type == "host_io"
        proc_cls, model_cls = core_classes(len(dest_axons), host=host)
        kwargs = dict(n_axons=max(core.n_axons, 1), dest_axons=dest_axons, n_positions=n_positions,
                      behaviour=behaviour, routes=routes, name=core.name)
        if host:
            kwargs.update(vocab_size=build.config["vocab_size"], initial=behaviour.first_output())
        procs[core.id] = proc_cls(**kwargs)
        models[proc_cls] = model_cls
    for core in build.cores:
        for k, (dest, _, _) in enumerate(core.routes):
            getattr(procs[core.id], f"out_{k}").connect(procs[dest].a_in)
    return procs, models


def run_lava(build, prompt, n_new: int) -> RunResult:
    n_positions = len(prompt) + n_new - 1
    steps = n_positions * build.schedule["period"]
    procs, models = build_processes(build, prompt, n_positions)
    host = build.host()
    anchor = procs[host.id]
    try:
        anchor.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models))
        logits = anchor.logits.get().astype(np.int64)
        tokens = anchor.tokens.get().astype(np.int64)
        sops = {c.name: procs[c.id].sops.get().astype(np.int64) for c in build.cores if c.type != "host_io"}
    finally:
        anchor.stop()
    return RunResult(tokens=[int(t) for t in tokens[: n_positions + 1]], logits=logits, core_sops=sops, timesteps=steps)
