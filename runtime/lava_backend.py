"""Build a Lava process graph from a build directory and run it on Loihi2SimCfg('fixed_pt') (how
it ends, whatever ends it: `lava_lifetime`)."""

import contextlib
import multiprocessing

import numpy as np
from tqdm import tqdm

from sdllm import interrupts, resources
from sdllm.runtime.generation import Generation
from sdllm.runtime.group import chip_pairs, make_groups, packets_by_pair
from sdllm.runtime.lava_lifetime import failures, start_resource_tracker, stop
from sdllm.runtime.lava_procs.cores import group_classes
from sdllm.runtime.requests import check_granularity
from sdllm.runtime.result import RunResult
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline
from sdllm.stages import CoreType

AUTO_PER_CORE_MAX = 32  # builds with more cores than this run one Lava process per chip


def choose_granularity(build, granularity: str) -> str:
    if granularity == "auto":
        return "core" if len(build.cores) <= AUTO_PER_CORE_MAX else "chip"
    check_granularity(granularity)
    return granularity


def build_processes(build, prompt, timeline: Timeline, granularity: str, sampler=GREEDY, host_io: bool = False):
    """One Lava Process per core group, connected as the routing tables say. host_io: the host's
    group has token ports (`sdllm.runtime.lava_procs.network`) instead of logits and tokens Vars."""
    n_positions = timeline.positions
    groups = make_groups(build, granularity, timeline, prompt, sampler)
    procs, models = [], {}
    n_pairs = len(chip_pairs(build))
    for group in groups:
        dest_axons = [groups[g].n_axons for g, _ in group.ports]
        host = group.host() is not None
        proc_cls, model_cls = group_classes(len(dest_axons), host="io" if host and host_io else host)
        kwargs = dict(n_axons=max(group.n_axons, 1), dest_axons=dest_axons, n_cores=len(group.cores),
                      n_positions=n_positions, n_chip_pairs=max(n_pairs, 1), group=group,
                      name="+".join(c.name for c in group.cores)[:200])
        if host:
            kwargs["vocab_size"] = build.config.vocab_size
        procs.append(proc_cls(**kwargs))
        models[procs[-1]] = model_cls  # keyed by the Process itself: Lava then needs no model discovery
    for group, proc in zip(groups, procs):
        for k, (dest, _) in enumerate(group.ports):
            getattr(proc, f"out_{k}").connect(procs[dest].a_in)
    return groups, procs, models


def run_lava(build, prompt, n_new: int, granularity: str = "auto", progress: bool = False, sampler=GREEDY,
             eos_id=None, on_token=None, pipelined: bool = True) -> RunResult:
    """Run the build on Lava. pipelined=False: the prompt's positions a period apart, as before
    the layer-pipelined schedule (for comparison)."""
    granularity = choose_granularity(build, granularity)
    n_workers = len(build.cores) if granularity == "core" else len({c.chip for c in build.cores})
    resources.require_memory(n_workers * resources.LAVA_WORKER_BYTES, f"--backend lava with {n_workers} worker processes")
    n_positions = len(prompt) + n_new - 1
    generation = Generation(len(prompt), eos_id, on_token)
    start_resource_tracker()
    timeline = Timeline.of(build.schedule, len(prompt), n_positions, pipelined)
    return _run(build, prompt, timeline, granularity, progress, sampler, generation)


def _run(build, prompt, timeline: Timeline, granularity: str, progress: bool, sampler, generation: Generation) -> RunResult:
    from lava.magma.core.run_conditions import RunSteps  # Lava after lava_procs (imported above): see its __init__
    from lava.magma.core.run_configs import Loihi2SimCfg

    n_positions = timeline.positions
    groups, procs, models = build_processes(build, prompt, timeline, granularity, sampler)
    anchor = next(p for g, p in zip(groups, procs) if g.host() is not None)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models)
    children = multiprocessing.active_children()
    done = n_positions
    # run calls: the prompt's pipelined positions up to its last logits, then a period per new token
    ends = [timeline.done(len(prompt) - 1)] + [timeline.done(p) for p in range(len(prompt), n_positions)]
    try:
        with tqdm(total=n_positions, desc="Lava", unit="token", disable=None if progress else True, leave=False) as bar:
            for i, end in enumerate(ends):
                # The first call forks Lava's workers. A signal while they start is acted on once the
                # start is over (this process then stops them); the workers inherit the handler that
                # only notes it, so a terminal's Ctrl-C or hang-up sent to the whole process group
                # does not kill them mid-step (which would leave the others waiting at a barrier).
                with failures(anchor):
                    with interrupts.deferred() if i == 0 else contextlib.nullcontext():
                        anchor.run(condition=RunSteps(num_steps=end - (ends[i - 1] if i else 0), blocking=False), run_cfg=cfg)
                    anchor.wait()
                position = len(prompt) - 1 + i  # whose logits the call ended with
                bar.update(len(prompt) if i == 0 else 1)
                if generation.needs_tokens() and generation.produced(position, int(anchor.tokens.get()[position + 1])):
                    done = position + 1
                    break
        logits = anchor.logits.get().astype(np.int64)[:done]
        tokens = anchor.tokens.get().astype(np.int64)
        sops, spikes, traffic, packets = {}, {}, 0, 0
        for group, proc in zip(groups, procs):
            traffic = traffic + proc.traffic.get().astype(np.int64)[:done]
            packets = packets + proc.chip_packets.get().astype(np.int64)
            counts, fired = proc.sops.get().astype(np.int64), proc.spikes.get().astype(np.int64)
            for k, c in enumerate(group.cores):
                if c.type != CoreType.HOST:
                    sops[c.name], spikes[c.name] = counts[k, :done], fired[k, :done]
    finally:
        stop(anchor, children)
    return RunResult(tokens=[int(t) for t in tokens[: done + 1]], logits=logits, core_sops=sops, timesteps=timeline.done(done - 1),
                     traffic=traffic, core_spikes=spikes, chip_packets=packets_by_pair(build, packets))
