"""Build a Lava process graph from a build directory and run it on Loihi2SimCfg('fixed_pt') (how
it ends, whatever ends it: `lava_lifetime`)."""

import bisect
import contextlib
import multiprocessing

from tqdm import tqdm

from sdllm import interrupts, resources
from sdllm.runtime.generation import Generation, Generations
from sdllm.runtime.group import make_groups, packets_by_pair
from sdllm.runtime.lava_lifetime import failures, start_resource_tracker, stop, watch
from sdllm.runtime.lava_procs.cores import group_classes
from sdllm.runtime.requests import check_granularity
from sdllm.runtime.result import RunResult, per_sequence
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
    (result,) = run_lava_batch(build, [prompt], n_new, granularity, progress, sampler,
                               [Generation(len(prompt), eos_id, on_token)], pipelined)
    return result


def run_lava_batch(build, prompts: list, n_new: int, granularity: str = "auto", progress: bool = False, sampler=GREEDY,
                   generations: list | None = None, pipelined: bool = True) -> list:
    """Each prompt's `RunResult`, its sequence run beside the others in one pipeline."""
    granularity = choose_granularity(build, granularity)
    n_workers = len(build.cores) if granularity == "core" else len({c.chip for c in build.cores})
    resources.require_memory(n_workers * resources.LAVA_WORKER_BYTES, f"--backend lava with {n_workers} worker processes")
    start_resource_tracker()
    timeline = Timeline.batch(build.schedule, [len(p) for p in prompts], n_new, pipelined)
    ending = Generations(timeline, generations or [Generation(len(p)) for p in prompts])
    return _run(build, prompts, timeline, granularity, progress, sampler, ending)


def _run(build, prompts: list, timeline: Timeline, granularity: str, progress: bool, sampler, ending: Generations) -> list:
    from lava.magma.core.run_conditions import RunSteps  # Lava after lava_procs (imported above): see its __init__
    from lava.magma.core.run_configs import Loihi2SimCfg

    groups, procs, models = build_processes(build, [t for p in prompts for t in p], timeline, granularity, sampler)
    anchor, host = next((p, g.host()) for g, p in zip(groups, procs) if g.host() is not None)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models)
    children = multiprocessing.active_children()
    # run calls: up to each position whose logits choose a token (the prompts' pipelined positions
    # before the first), in the order they come
    choosing = sorted((timeline.done(p), p) for p in range(timeline.positions) if timeline.samples(p))
    done_at = sorted(timeline.done(p) for p in range(timeline.positions))
    try:
        with tqdm(total=timeline.positions, desc="Lava", unit="token", disable=None if progress else True, leave=False) as bar:
            last = 0
            for i, (end, position) in enumerate(choosing):
                # The first call forks Lava's workers. A signal while they start is acted on once the
                # start is over (this process then stops them); the workers inherit the handler that
                # only notes it, so a terminal's Ctrl-C or hang-up sent to the whole process group
                # does not kill them mid-step (which would leave the others waiting at a barrier).
                with failures(anchor):
                    with interrupts.deferred() if i == 0 else contextlib.nullcontext():
                        anchor.run(condition=RunSteps(num_steps=end - last, blocking=False), run_cfg=cfg)
                    watch(anchor)
                    anchor.wait()
                last = end
                bar.update(bisect.bisect_right(done_at, end) - bar.n)
                if ending.produced(position, int(host.chosen[position])):
                    break
        # the workers wrote these in shared memory (`CoreGroup.share`); copies outlive it
        sops, spikes, traffic, packets = {}, {}, 0, 0
        for group in groups:
            traffic = traffic + group.traffic
            packets = packets + group.chip_packets
            sops.update(group.sops())
            spikes.update(group.core_spikes())
        return per_sequence(timeline, prompts, ending.kept, host.chosen, host.logits, sops, traffic, spikes,
                            packets_by_pair(build, packets))
    finally:
        stop(anchor, children)
