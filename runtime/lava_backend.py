"""Build a Lava process graph from a build directory and run it on Loihi2SimCfg('fixed_pt') (how
it ends, whatever ends it: `lava_lifetime`)."""

import contextlib
import multiprocessing

from tqdm import tqdm

from sdllm import interrupts, resources
from sdllm.runtime.generation import Generation
from sdllm.runtime.group import make_groups, packets_by_pair
from sdllm.runtime.lava_lifetime import failures, start_resource_tracker, stop, watch
from sdllm.runtime.lava_procs.cores import group_classes
from sdllm.runtime.requests import check_granularity
from sdllm.runtime.result import RunResult
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline

AUTO_PER_CORE_MAX = 32  # builds with more cores than this run one Lava process per chip


def choose_granularity(build, granularity: str) -> str:
    if granularity == "auto":
        return "core" if len(build.cores) <= AUTO_PER_CORE_MAX else "chip"
    check_granularity(granularity)
    return granularity


def build_processes(build, prompt, timeline: Timeline, granularity: str, sampler=GREEDY, host_io: bool = False):
    """One Lava Process per core group, connected as the routing tables say; what each group
    measures and produces in shared memory (`CoreGroup.share`). host_io: the host's group has token
    ports (`sdllm.runtime.lava_procs.network`)."""
    groups = make_groups(build, granularity, timeline, prompt, sampler)
    procs, models = [], {}
    for group in groups:
        group.share()
        src_axons = [len(axons) for _, axons in group.inputs]
        dest_axons = [len(axons) for _, axons, _ in group.ports]
        io = host_io and group.host() is not None
        proc_cls, model_cls = group_classes(len(src_axons), len(dest_axons), host_io=io)
        kwargs = dict(src_axons=src_axons, dest_axons=dest_axons, n_positions=timeline.positions, group=group,
                      name="+".join(c.name for c in group.cores)[:200])
        if io:
            kwargs["vocab_size"] = build.config.vocab_size
        procs.append(proc_cls(**kwargs))
        models[procs[-1]] = model_cls  # keyed by the Process itself: Lava then needs no model discovery
    for g, (group, proc) in enumerate(zip(groups, procs)):
        for k, (dest, _, _) in enumerate(group.ports):
            slot = [src for src, _ in groups[dest].inputs].index(g)
            getattr(proc, f"out_{k}").connect(getattr(procs[dest], f"in_{slot}"))
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
    anchor, host = next((p, g.host()) for g, p in zip(groups, procs) if g.host() is not None)
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
                    watch(anchor)
                    anchor.wait()
                position = len(prompt) - 1 + i  # whose logits the call ended with
                bar.update(len(prompt) if i == 0 else 1)
                if generation.needs_tokens() and generation.produced(position, int(host.tokens[position + 1])):
                    done = position + 1
                    break
        # the workers wrote these in shared memory (`CoreGroup.share`); copies outlive it
        logits, tokens = host.logits[:done].copy(), host.tokens.copy()
        sops, spikes, traffic, packets = {}, {}, 0, 0
        for group in groups:
            traffic = traffic + group.traffic[:done]
            packets = packets + group.chip_packets
            sops.update({k: v[:done].copy() for k, v in group.sops().items()})
            spikes.update({k: v[:done].copy() for k, v in group.core_spikes().items()})
    finally:
        stop(anchor, children)
    return RunResult(tokens=[int(t) for t in tokens[: done + 1]], logits=logits, core_sops=sops, timesteps=timeline.done(done - 1),
                     traffic=traffic, core_spikes=spikes, chip_packets=packets_by_pair(build, packets))
