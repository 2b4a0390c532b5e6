"""Build a Lava process graph from a build directory and run it on Loihi2SimCfg('fixed_pt')."""

import glob
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading

import numpy as np
from tqdm import tqdm

from sdllm.errors import SdllmError
from sdllm.runtime.generation import Generation
from sdllm.runtime.group import chip_pairs, make_groups, packets_by_pair
from sdllm.runtime.lava_procs.cores import group_classes
from sdllm.runtime.result import RunResult
from sdllm.runtime.sampling import GREEDY
from sdllm.stages import CoreType

GRANULARITIES = ("auto", "core", "chip")
AUTO_PER_CORE_MAX = 32  # builds with more cores than this run one Lava process per chip


def choose_granularity(build, granularity: str) -> str:
    if granularity == "auto":
        return "core" if len(build.cores) <= AUTO_PER_CORE_MAX else "chip"
    if granularity not in GRANULARITIES:
        raise SdllmError(f"--granularity: one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    return granularity


def build_processes(build, prompt, n_positions: int, granularity: str, error_dir: str, sampler=GREEDY, host_io: bool = False):
    """One Lava Process per core group, connected as the routing tables say. host_io: the host's
    group has token ports (`sdllm.runtime.lava_procs.network`) instead of logits and tokens Vars."""
    groups = make_groups(build, granularity, n_positions, prompt, sampler)
    procs, models = [], {}
    n_pairs = len(chip_pairs(build))
    for group in groups:
        dest_axons = [groups[g].n_axons for g, _ in group.ports]
        host = group.host() is not None
        proc_cls, model_cls = group_classes(len(dest_axons), host="io" if host and host_io else host)
        kwargs = dict(n_axons=max(group.n_axons, 1), dest_axons=dest_axons, n_cores=len(group.cores),
                      n_positions=n_positions, n_chip_pairs=max(n_pairs, 1), group=group, error_dir=error_dir,
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
             eos_id=None, on_token=None) -> RunResult:
    granularity = choose_granularity(build, granularity)
    n_positions = len(prompt) + n_new - 1
    generation = Generation(len(prompt), eos_id, on_token)
    error_dir = tempfile.mkdtemp(prefix="sdllm-lava-")
    try:
        return _run(build, prompt, n_positions, granularity, error_dir, progress, sampler, generation)
    except RuntimeError as e:  # Lava reports a failed worker this way
        raise SdllmError(f"Lava run failed: {_worker_error(error_dir) or e}") from None
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


def _worker_error(error_dir: str) -> str:
    path = os.path.join(error_dir, "error.txt")
    if os.path.exists(path):
        with open(path) as f:
            return f.readline().strip()
    for log in sorted(glob.glob(os.path.join(error_dir, "worker-*.log"))):
        with open(log) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        if lines:
            return lines[-1]
    return ""


def _run(build, prompt, n_positions: int, granularity: str, error_dir: str, progress: bool, sampler,
         generation: Generation) -> RunResult:
    from lava.magma.core.run_conditions import RunSteps  # Lava after lava_procs (imported above): see its __init__
    from lava.magma.core.run_configs import Loihi2SimCfg

    groups, procs, models = build_processes(build, prompt, n_positions, granularity, error_dir, sampler)
    anchor = next(p for g, p in zip(groups, procs) if g.host() is not None)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models)
    done = n_positions
    try:
        period = build.schedule["period"]
        interrupted = []  # Ctrl-C while the workers start
        with tqdm(total=n_positions, desc="Lava", unit="token", disable=None if progress else True, leave=False) as bar:
            for i in range(n_positions):  # one token per run call, for the progress bar
                # The first call starts Lava's worker processes (forked): they must not act on Ctrl-C
                # themselves (they would die mid-step and leave the others at the barrier). While
                # they start, a Ctrl-C is only noted — the workers inherit that handler, so for them
                # it does nothing — and this process acts on it once the start is over: it stops them.
                previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(1)) if i == 0 else None
                try:
                    anchor.run(condition=RunSteps(num_steps=period, blocking=False), run_cfg=cfg)
                finally:
                    if previous is not None:
                        signal.signal(signal.SIGINT, previous)
                if interrupted:
                    raise KeyboardInterrupt
                anchor.wait()
                bar.update()
                if i + 1 >= len(prompt) and generation.needs_tokens():
                    if generation.produced(i, int(anchor.tokens.get()[i + 1])):
                        done = i + 1
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
        stop(anchor)
    return RunResult(tokens=[int(t) for t in tokens[: done + 1]], logits=logits, core_sops=sops, timesteps=done * period,
                     traffic=traffic, core_spikes=spikes, chip_packets=packets_by_pair(build, packets))


def stop(anchor, grace_s: float = 10.0) -> None:
    """Stop Lava; if it does not stop within grace_s (interrupted mid-run), end its processes."""
    stopper = threading.Thread(target=_quiet_stop, args=(anchor,), daemon=True)
    stopper.start()
    stopper.join(grace_s)
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(2.0)
        if child.is_alive():
            child.kill()
            child.join()


def _quiet_stop(anchor) -> None:
    try:
        anchor.stop()
    except Exception:  # noqa: BLE001 — a failed stop is handled by terminating the processes
        pass
