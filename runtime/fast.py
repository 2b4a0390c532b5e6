"""The fast executor: a build directory run without Lava, a window of tokens at once.

Each static stage's cores are folded into one integer matrix from unit outputs to unit inputs:
for every synapse core, the routes that feed its axons, its synapse table, and the routes that
carry its sums on (to the unit, or through a reduce core), composed and summed over the stage.
Integer sums are associative, so that matrix times the spike counts equals what the cores
deliver to the unit, bit for bit — and a wrong route or synapse changes it. KV stages and the
unit programs run as the KV and neuron-unit cores do (`models.units`), on whole windows, through
`IntegerSDLLM`'s window forward with these matrices. Per-core SOPs come from each core's own
axons (as its routes feed them) and non-zero fan-out; a reduce core's from the partial sums it
receives. `timesteps` is what the compiled schedule takes on hardware.
"""

import ctypes
import math
from collections import defaultdict

import numpy as np

from sdllm import codes, stages
from sdllm.cores import reduce, synapse
from sdllm.errors import SdllmError
from sdllm.models.integer.likelihood import nll
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.integer.units import point_keys, scale_key
from sdllm.resources import require_memory
from sdllm.runtime.generation import Generation
from sdllm.runtime.result import RunResult
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline
from sdllm.stages import CoreType

STAGE_CORES = (CoreType.SYNAPSE, CoreType.REDUCE, CoreType.KV_QK, CoreType.KV_PV)
KV_CORES = (CoreType.KV_QK, CoreType.KV_PV)


def keep_large_allocations() -> None:
    """glibc returns every large block (numpy's window-sized temporaries) to the OS and faults
    it back in, zeroed, page by page on the next one: a third of the executor's time. Serve
    them from the heap instead (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD). No effect elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)
        libc.mallopt(-1, 1 << 31)
    except (OSError, AttributeError):
        pass


class FoldedBuild:
    """A build's static stages as (unit-input × unit-output) integer matrices, and per core the
    unit outputs that feed its axons."""

    def __init__(self, build):
        keep_large_allocations()
        self.build = build
        cores = build.cores
        incoming = defaultdict(list)  # core id -> [(src core, src index, dst axon)]
        for c in cores:
            for dest, src, dst in c.routes:
                incoming[dest].append((c.id, src, dst))
        self.feed = {}  # core id -> unit output index per spike axon (-1: not fed by a unit)
        for c in cores:
            if c.type in stages.SYNAPTIC_CORES:
                feed = np.full(c.n_axons, -1, np.int64)
                for s, src, dst in incoming[c.id]:
                    if cores[s].type == CoreType.NEURON_UNIT:
                        feed[dst] = src
                self.feed[c.id] = feed
        self.stages = defaultdict(list)
        for c in cores:
            if c.type in STAGE_CORES:
                self.stages[c.node].append(c)
        self.weights, self.windows = {}, {}
        self.fanout = {}  # stage -> (its synapse cores, (stage inputs x cores) non-zero fan-out)
        self.partial_w = {}  # partial tiles keep their weights, for their reduce cores' SOPs
        shapes = stages.static_shapes(build.config)
        for name, members in self.stages.items():
            if members[0].type in KV_CORES:
                continue
            syn = [c for c in members if c.type == CoreType.SYNAPSE]
            dense = {c.id: c.weights() for c in syn}
            self.weights[name], self.windows[name] = synapse.fold(name, members, dense, self.feed, cores, shapes[name],
                                                                  require_memory)
            lo_in = self.windows[name][1]
            fan = np.zeros((self.weights[name].shape[1], len(syn)), np.float64)
            for k, c in enumerate(syn):
                np.add.at(fan, (self.feed[c.id] - lo_in, k), np.count_nonzero(dense[c.id], axis=0))
                if len(syn) < len(members):
                    self.partial_w[c.id] = dense[c.id]
            self.fanout[name] = (syn, fan)

    def executor(self) -> IntegerSDLLM:
        """The window forward over the folded stages (made once, reset for every run)."""
        if getattr(self, "_executor", None) is None:
            self._executor = self._make_executor()
        self._executor.reset()
        return self._executor

    def _make_executor(self) -> IntegerSDLLM:
        b = self.build
        units = sorted((c for c in b.cores if c.type == CoreType.NEURON_UNIT), key=lambda c: c.layer)
        last = units[-1].params  # the last unit holds the final norm and quantisation, the host the head's scales
        head = {key: last[key] for key in ("eps_fx", *point_keys(stages.HEAD_IN, last))}
        head[scale_key(stages.HEAD)] = b.host.params[scale_key(stages.HEAD)]
        layer_params = [{k: v for k, v in u.params.items() if k not in ("axons", "neurons")} for u in units]
        return IntegerSDLLM.from_parts(b.config, b.quant, self.weights, b.host.params["embed"], head, layer_params)

    def core_sops(self, spikes: dict, pos: np.ndarray) -> dict:
        """core name -> SOPs per token, from the spike counts per stage (tokens, n)."""
        out = {}
        cfg = self.build.config
        spec = self.build.quant
        for name, members in self.stages.items():
            code = self.build.schedule.stages[name].code
            q = codes.CODES[code].spikes(np.asarray(spikes[name]), spec.of_stage(name).bits)  # events per input
            lo_in = self.windows[name][1] if name in self.windows else 0
            partial = []
            if name in self.fanout:  # exact: counts x fan-outs stay far below 2**53
                syn, fan = self.fanout[name]
                per_core = np.rint(q.astype(np.float64) @ fan).astype(np.int64)
                for k, c in enumerate(syn):
                    out[c.name] = per_core[:, k]
                    if c.id in self.partial_w:
                        partial.append((c, spikes[name][:, self.feed[c.id] - lo_in] @ self.partial_w[c.id].T))
            for c in (c for c in members if c.type in KV_CORES):
                spike_axons = self.feed[c.id][: c.params["n_spike_axons"]] - self._kv_offset(c)
                if spike_axons.size and (spike_axons.min() < 0 or spike_axons.max() >= q.shape[1]):
                    raise SdllmError(f"build: core {c.name}: spike axons fed from outside its stage's unit outputs")
                s = q[:, spike_axons].sum(1)
                out[c.name] = s * stages.stage_of(name).fanout(cfg, pos=pos)
            for r in (c for c in members if c.type == CoreType.REDUCE):
                out[r.name] = reduce.core_sops(partial, r, len(pos))
        for c in self.build.cores:
            if c.type == CoreType.NEURON_UNIT:
                out[c.name] = np.zeros(len(pos), np.int64)
        return {c.name: np.asarray(out[c.name], np.int64) for c in self.build.cores if c.type != CoreType.HOST}

    def _kv_offset(self, core) -> int:
        """Unit output index of the first spike axon of a KV stage (its segment's start)."""
        return self.build.segments(stages.unit_node(core.layer), "outputs")[stages.stage_of(core.node).name][0]


def run_fast(build, prompt, n_new: int, folded: FoldedBuild | None = None, sampler=GREEDY, eos_id=None,
             on_token=None) -> RunResult:
    """Tokens, logits and per-core SOPs of the compiled network: the prompt in one window, then
    one token at a time (the sampler's choice). Pass `folded` to reuse one folding over many runs."""
    folded = folded or FoldedBuild(build)
    generation = Generation(len(prompt), eos_id, on_token)
    ref = folded.executor()
    tokens = [int(t) for t in prompt]
    out, sp = ref.forward(tokens, 0)
    logits, spikes = [out], [sp]
    pos = len(tokens)
    tokens.append(sampler(logits[-1][-1], pos - 1))
    stop = generation.produced(pos - 1, tokens[-1])
    for _ in range(n_new - 1):
        if stop:
            break
        out, sp = ref.forward([tokens[-1]], pos)
        logits.append(out)
        spikes.append(sp)
        pos += 1
        tokens.append(sampler(out[-1], pos - 1))
        stop = generation.produced(pos - 1, tokens[-1])
    all_logits = np.concatenate(logits)
    all_spikes = {k: np.concatenate([s[k].reshape(len(s[k]), -1) for s in spikes]) for k in spikes[0]}
    positions = np.arange(len(all_logits))
    n_positions = min(len(prompt) + n_new - 1, len(tokens) - 1)
    return RunResult(tokens=tokens[: n_positions + 1], logits=all_logits[:n_positions],
                     core_sops={k: v[:n_positions] for k, v in folded.core_sops(all_spikes, positions).items()},
                     timesteps=Timeline.of(build.schedule, len(prompt), n_positions).done(n_positions - 1), traffic=None,
                     stepped=False)


def run_fast_batch(build, prompts: list, n_new: int, sampler=GREEDY, generations: list | None = None,
                   pipelined: bool = True) -> list:
    """Each prompt's `RunResult`: every sequence computed alone (the same integers as beside the
    others: each attends only to its own positions), its timesteps those of the batch's pipeline."""
    folded = FoldedBuild(build)
    timeline = Timeline.batch(build.schedule, [len(p) for p in prompts], n_new, pipelined)
    generations = generations or [Generation(len(p)) for p in prompts]
    out = []
    for (first, _), prompt, generation in zip(timeline.sequences, prompts, generations):
        r = run_fast(build, prompt, n_new, folded, sampler, generation.eos_id, generation.on_token)
        r.timesteps = timeline.done(first + len(r.logits) - 1)
        out.append(r)
    return out


def build_perplexity(build, rows: np.ndarray, progress: bool = True) -> float:
    """Perplexity of the compiled network (teacher-forced on each window of `rows`)."""
    from tqdm import tqdm

    folded = FoldedBuild(build)
    total = 0.0
    for row in tqdm(rows, desc="compiled network", disable=None if progress else True, leave=False):
        logits = np.asarray(run_fast(build, [int(t) for t in row[:-1]], 1, folded).logits)
        total += float(nll(logits, row[1:]).sum())
    return math.exp(total / (rows.shape[0] * (rows.shape[1] - 1)))
