"""Synapse core: a block of a static stage's weights (a linear layer's, or the LM head's).

Tiling cuts a stage's (n_out, n_in) integer matrix into a grid of fan-in × fan-out blocks, the
fewest cores that hold it (`tile`); a block W (neurons × axons) is stored in the cheaper of two
encodings: sparse (a weight and a neuron index per non-zero, CSR by axon) or dense (a weight for
every neuron; up to 4-bit weights two per byte, `sdllm.nibbles`). Both store a pointer per axon.

Dynamics. In each step t of its stage's window (first ≤ t ≤ last) the core receives the input
point's spikes s_t ∈ {−1, 0, +1}^axons and updates its accumulators

    a ← r · a + W s_t                    (r: the code's radix, 1 for counts, 2 for bit planes)

so that after a window carrying the integers q, a = W q exactly (additions and shifts only).
At t = last it sends a as graded spikes (to the stage's unit, or — a fan-in part — to its reduce
cores, `cores.reduce`) and resets a ← 0. SOPs: Σ_j [s_t,j ≠ 0] · nnz(W[:, j]) each step (the
stage table's rule, `stages.Stage.fanout`). In a graded code s_t = q (T = 1, each op a
multiply-accumulate). Its output is bounded by Q · the largest row Σ|w| of W.

For the fast executor a stage's synapse cores fold, with the routes in and out of them, into one
integer matrix from unit outputs to unit inputs (`fold`); integer sums are associative, so it
equals what the cores deliver, bit for bit.
"""

import numpy as np

from sdllm import nibbles
from sdllm.cores import reduce
from sdllm.cores.core import Core
from sdllm.cores.stepping import CoreBehaviour, StageWindow, check_events
from sdllm.errors import SdllmError
from sdllm.stages import CoreType

MAX_FANIN_SPLIT = 64


def _parts(n: int, k: int) -> np.ndarray:
    """Boundaries of n items cut into k near-equal contiguous parts (as np.array_split)."""
    q, r = divmod(n, k)
    return np.concatenate([[0], np.cumsum([q + 1] * r + [q] * (k - r))])


def _block_nnz(nz: np.ndarray, a_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Non-zeros of every (neuron part, axon part) block."""
    rows = np.add.reduceat(nz, n_b[:-1], axis=0, dtype=np.int64)
    return np.add.reduceat(rows, a_b[:-1], axis=1)


def _grid(name: str, w: np.ndarray, wb: int, lim):
    """Fewest cores (tiles + reduce cores): (axon bounds, neuron bounds, bits, dense?, nnz) of the
    blocks. A grid whose dense blocks fit needs no non-zero counts to be accepted; the counts
    (costly on big matrices) are taken only where dense blocks do not fit, and for the result."""
    n_out, n_in = w.shape
    nz = (w != 0).view(np.int8)
    nnz_total = int(np.count_nonzero(nz))
    start = min_static_cores(nnz_total, n_in, wb, n_out, lim)
    # sparse blocks can only help where the matrix is not far denser than the break-even density
    sparse_may_fit = nnz_total * (wb + lim.synapse_index_bits) < 1.25 * n_out * n_in * wb
    best = None
    a_min = -(-n_in // lim.max_input_axons)
    for a_s in range(a_min, min(MAX_FANIN_SPLIT, n_in) + 1):
        extra = reduce.count(n_out, a_s, lim)
        n_s = max(1, -(-start // a_s), -(-n_out // lim.max_neurons))
        if best is not None and a_s * n_s + extra >= best[0]:
            break
        a_b = _parts(n_in, a_s)
        while n_s <= n_out:
            n_b = _parts(n_out, n_s)
            n_ax, n_ne = np.diff(a_b)[None, :], np.diff(n_b)[:, None]
            fits = (block_bits(n_ax, n_ne, n_ax * n_ne, wb, lim)[0] <= lim.synapse_memory_bits).all()
            if not fits and sparse_may_fit:
                fits = (block_bits(n_ax, n_ne, _block_nnz(nz, a_b, n_b), wb, lim)[0] <= lim.synapse_memory_bits).all()
            if fits:
                if best is None or a_s * n_s + extra < best[0]:
                    best = (a_s * n_s + extra, a_b, n_b)
                break
            n_s += max(1, n_s // 64)
    if best is None:
        raise SdllmError(
            f"stage {name}: does not fit any core: one axon with its {n_out} neurons needs "
            f"{int(block_bits(1, n_out, n_out, wb, lim)[0])} synapse bits of {lim.synapse_memory_bits} available"
        )
    _, a_b, n_b = best
    nnz = _block_nnz(nz, a_b, n_b)
    bits, dense = block_bits(np.diff(a_b)[None, :], np.diff(n_b)[:, None], nnz, wb, lim)
    return a_b, n_b, bits, dense, nnz


def min_static_cores(nnz: int, n_axons: int, weight_bits: int, n_neurons: int, lim) -> int:
    """Cores a static stage needs at least: its synapse bits (every axon stored once, the cheaper
    encoding of the whole matrix) over a core's, and its axons and neurons over a core's."""
    bits = int(block_bits(n_axons, n_neurons, nnz, weight_bits, lim)[0])
    return max(1, -(-bits // lim.synapse_memory_bits), -(-n_neurons // lim.max_neurons))


def block_bits(n_axons, n_neurons, nnz, weight_bits: int, lim):
    """(bits, dense?) of blocks in the cheaper encoding. Works elementwise on arrays."""
    sparse = n_axons * lim.axon_overhead_bits + nnz * (weight_bits + lim.synapse_index_bits)
    dense = n_axons * (lim.axon_overhead_bits + n_neurons * weight_bits)
    return np.minimum(sparse, dense), dense < sparse


def synapse_table(w: np.ndarray):
    """CSR by axon of a (neurons, axons) block: (axon_ptr, neuron_index, weight), zeros not stored."""
    axon, neuron = np.nonzero(w.T)  # row-major over wᵀ: by axon, then neuron
    ptr = np.zeros(w.shape[1] + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(axon, minlength=w.shape[1]))
    return ptr, neuron.astype(np.int64), w[neuron, axon]


def synapse_arrays(core, w: np.ndarray) -> dict:
    """The synapse table of a static core (tiling fixed its block and encoding), cut from its
    stage's full weight matrix."""
    n0, n1, a0, a1 = core.block
    block = w[n0:n1, a0:a1]
    if core.params["encoding"] == "dense":
        return {"weight_nibbles": nibbles.pack(block)} if nibbles.holds(core.params["weight_bits"]) else {"weight_dense": block}
    ptr, idx, wts = synapse_table(block)
    return {"axon_ptr": ptr, "neuron_index": idx, "weight": wts}


def tile(node, lim, q_max: int, first_id: int):
    """(cores, lower bound, each input's fan-out) of a static stage: its fan-in × fan-out tiles,
    then its reduce cores. q_max: the largest value of the stage's input (its sums are bounded by
    q_max · Σ|w|). The fan-out of an input: its non-zero weights, the synapses one event reads."""
    wb = node.attrs["weight_bits"]
    w = node.weight.load()
    a_b, n_b, bits, dense, nnz = _grid(node.name, w, wb, lim)
    n_out, n_in = w.shape
    bound = min_static_cores(int(nnz.sum()), n_in, wb, n_out, lim) + reduce.count(n_out, -(-n_in // lim.max_input_axons), lim)
    abs_rows = np.abs(w.astype(np.int16))
    a_s, n_s = len(a_b) - 1, len(n_b) - 1
    cores = []
    for ai in range(a_s):
        row_sums = abs_rows[:, a_b[ai]:a_b[ai + 1]].sum(1, dtype=np.int64)
        for ni in range(n_s):
            suffix = f"[{ni}]" if a_s == 1 else f"[{ni},{ai}]"
            cores.append(Core(
                first_id + len(cores), node.name + suffix, CoreType.SYNAPSE, node.name, node.layer,
                np.arange(a_b[ai], a_b[ai + 1]), np.arange(n_b[ni], n_b[ni + 1]),
                synapse_bits=int(bits[ni, ai]),
                synapse_entries=int(nnz[ni, ai]) if not dense[ni, ai] else int((a_b[ai + 1] - a_b[ai]) * (n_b[ni + 1] - n_b[ni])),
                params={"weight_bits": wb, "encoding": "dense" if dense[ni, ai] else "sparse", "fan_in_part": ai},
                block=(int(n_b[ni]), int(n_b[ni + 1]), int(a_b[ai]), int(a_b[ai + 1])),
                partial=a_s > 1,
                payload_bound=q_max * int(row_sums[n_b[ni]:n_b[ni + 1]].max(initial=0)),
            ))
    if a_s > 1:
        cores += reduce.tile(node, a_s, abs_rows.sum(1, dtype=np.int64), lim, q_max, first_id + len(cores))
    return cores, bound, np.count_nonzero(w, axis=0)


class SynapseCore(StageWindow, CoreBehaviour):
    def __init__(self, core, build, timeline):
        CoreBehaviour.__init__(self, core, build, timeline)
        StageWindow.__init__(self, core, build)
        self.w = core.weights()
        self.fanout = np.count_nonzero(self.w, axis=0)  # SOPs count non-zero synapses in either encoding
        self.acc = np.zeros(core.n_neurons, np.int64)
        bound = int(np.abs(self.w).sum(1).max(initial=0)) * self.event_max  # the largest |sum| of one step
        for exact, dtype in ((1 << 24, np.float32), (1 << 53, np.float64)):  # BLAS where floats hold every sum exactly
            if bound < exact:
                self.w = self.w.astype(dtype)
                break

    def step(self, token, phase, x):
        if self.first <= phase <= self.last:
            check_events(self.core, x, self.event_max)
            if self.radix != 1:
                self.acc *= self.radix
            events = np.flatnonzero(x)
            if len(events):
                self.acc += (self.w @ x.astype(self.w.dtype)).astype(np.int64)
                self.sops[token] += int(self.fanout[events].sum())  # one op per event and synapse, whatever it carries
            if phase == self.last:
                out, self.acc = self.acc, np.zeros_like(self.acc)
                return out
        return self.zeros


def fold_paths(core, w, feed, onward: dict, cores) -> list:
    """The paths a synapse core contributes to its stage's folded matrix: [(weight rows, the unit
    outputs feeding its axons, the unit inputs its sums reach)] — through a reduce core where its
    route leads to one (onward: reduce core id -> `reduce.onward`)."""
    paths = []
    for dest, src, dst in core.routes:
        d = reduce.through(onward[dest], dst, cores[dest].n_neurons) if dest in onward else dst
        paths.append((w[src], feed, d))
    return paths


def fold(name: str, members: list, dense: dict, feed: dict, cores, shape: tuple, require_memory):
    """(folded (unit inputs × unit outputs) int64 matrix, its (output, input) window offsets) of
    a static stage: Σ over its synapse cores of (routes on, via a reduce core where there is one)
    · synapses · (routes in)."""
    onward = {r.id: reduce.onward(r, name) for r in members if r.type == CoreType.REDUCE}
    paths = []
    for c in (c for c in members if c.type == CoreType.SYNAPSE):
        if (feed[c.id] < 0).any():
            raise SdllmError(f"build: stage {name}: core {c.name} has axons no neuron unit feeds")
        paths += fold_paths(c, dense[c.id], feed[c.id], onward, cores)
    if not paths:
        raise SdllmError(f"build: stage {name}: no route carries its sums to a neuron unit")
    lo_out, hi_out = min(int(d.min()) for *_, d in paths), max(int(d.max()) for *_, d in paths)
    lo_in, hi_in = min(int(f.min()) for _, f, _ in paths), max(int(f.max()) for _, f, _ in paths)
    found = (hi_out - lo_out + 1, hi_in - lo_in + 1)
    require_memory(8 * found[0] * found[1], f"build: stage {name}'s folded matrix")
    folded = np.zeros(found, np.int64)
    for w, f, d in paths:
        if len(np.unique(d)) == len(d) and len(np.unique(f)) == len(f):
            folded[np.ix_(d - lo_out, f - lo_in)] += w
        else:
            np.add.at(folded, (d[:, None] - lo_out, f[None, :] - lo_in), w)
    if found != shape:
        raise SdllmError(f"build: stage {name}: its routes carry {found[1]} inputs to {found[0]} outputs, "
                         f"the stage has {shape[::-1]}")
    return folded, (lo_out, lo_in)
