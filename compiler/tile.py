"""Pass 2: split every node into neuron cores that fit the per-core limits.

Static stages are cut into a grid of axon (fan-in) x neuron (fan-out) blocks. When the fan-in is
cut, the blocks are partial: their sums travel as graded spikes to the stage's reduce cores,
which add the parts and send the stage's outputs one step later. Each block stores its synapses
in the cheaper of two encodings: sparse (weight + neuron index per non-zero) or dense (a weight
for every neuron of the block). KV-cache stages are cut by query heads. A neuron unit spans as
many cores as its axons and neurons need; the host stays off-chip.

Weights are loaded one stage at a time and dropped: cores keep their block's coordinates and
sizes; `sdllm.compiler.synapses` cuts the tables again when the build is written. Adds `cores`
and `bounds` (per node, the fewest cores its resources need: the report's lower bound).
"""

import numpy as np
from tqdm import tqdm

from sdllm import stages
from sdllm.compiler.ir import Core, Network
from sdllm.compiler.synapses import block_bits
from sdllm.errors import SdllmError
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.units import hand_off, piece_bound
from sdllm.stages import CoreType, NodeKind

MAX_FANIN_SPLIT = 64
REDUCE_WEIGHT_BITS = 1  # a reduce core's synapses all have weight 1


def _parts(n: int, k: int) -> np.ndarray:
    """Boundaries of n items cut into k near-equal contiguous parts (as np.array_split)."""
    q, r = divmod(n, k)
    return np.concatenate([[0], np.cumsum([q + 1] * r + [q] * (k - r))])


def _reduce_cores(n_out: int, a_s: int, lim) -> int:
    if a_s == 1:
        return 0
    per = min(lim.max_input_axons // a_s, lim.max_neurons)
    return -(-n_out // per)


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
        extra = _reduce_cores(n_out, a_s, lim)
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


def _kv_bits(n_heads: int, n_spike_axons: int, a: dict, lim) -> int:
    """A KV core's cache is dense (every position of every head): a weight per entry, a pointer per spike axon."""
    return n_heads * a["max_seq_len"] * a["head_dim"] * a["weight_bits"] + n_spike_axons * lim.axon_overhead_bits


def _kv_tiles(node, lim):
    a = node.attrs
    nh, hd, S, group = a["n_heads"], a["head_dim"], a["max_seq_len"], a["n_heads"] // a["n_kv_heads"]
    per_head_axons = hd if node.kind is NodeKind.KV_QK else S
    per_head_out = S if node.kind is NodeKind.KV_QK else hd
    for n_s in range(1, nh + 1):
        if nh % n_s:
            continue
        k = nh // n_s
        if _kv_bits(k, k * per_head_axons, a, lim) > lim.synapse_memory_bits or k * per_head_out > lim.max_neurons:
            continue
        tiles = []
        for h0 in range(0, nh, k):
            g0, g1 = h0 // group, (h0 + k - 1) // group + 1
            spikes = np.arange(h0 * per_head_axons, (h0 + k) * per_head_axons)
            write = nh * per_head_axons + np.arange(g0 * hd, g1 * hd)
            tiles.append((np.concatenate([spikes, write]), np.arange(h0 * per_head_out, (h0 + k) * per_head_out), h0, k, g0))
        if max(len(t[0]) for t in tiles) <= lim.max_input_axons:
            return tiles
    raise SdllmError(
        f"stage {node.name}: one head's KV cache needs {_kv_bits(1, per_head_axons, a, lim)} synapse bits "
        f"and {per_head_axons + hd} axons, a core holds {lim.synapse_memory_bits} bits and {lim.max_input_axons} axons"
    )


def _static_cores(node, lim, q_max: int, first_id: int):
    """q_max: the largest spike count of the stage's input (its sums are bounded by q_max · Σ|w|)."""
    """(cores, lower bound) of a static stage: its fan-in x fan-out tiles, then its reduce cores."""
    wb = node.attrs["weight_bits"]
    w = node.weight.load()
    a_b, n_b, bits, dense, nnz = _grid(node.name, w, wb, lim)
    n_out, n_in = w.shape
    bound = min_static_cores(int(nnz.sum()), n_in, wb, n_out, lim) + _reduce_cores(n_out, -(-n_in // lim.max_input_axons), lim)
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
        full = abs_rows.sum(1, dtype=np.int64)
        per = min(lim.max_input_axons // a_s, lim.max_neurons)
        for r, r0 in enumerate(range(0, n_out, per)):
            r1 = min(r0 + per, n_out)
            n_ax = a_s * (r1 - r0)
            cores.append(Core(
                first_id + len(cores), f"{node.name}.reduce[{r}]", CoreType.REDUCE, node.name, node.layer,
                np.arange(n_ax), np.arange(r0, r1),
                synapse_bits=n_ax * (lim.axon_overhead_bits + REDUCE_WEIGHT_BITS + lim.synapse_index_bits),
                synapse_entries=n_ax,
                params={"weight_bits": REDUCE_WEIGHT_BITS, "fan_in_parts": a_s},
                payload_bound=q_max * int(full[r0:r1].max(initial=0)),
            ))
    return cores, bound


def _kv_cores(node, lim, q_max: int, first_id: int):
    """(cores, lower bound) of a KV stage: its head groups."""
    a = node.attrs
    kv_max = fx.qmax(a["weight_bits"])  # the cached keys or values are its weights
    per_head = a["head_dim"] if node.kind is NodeKind.KV_QK else a["max_seq_len"]
    cores = []
    for axons, neurons, h0, k, g0 in _kv_tiles(node, lim):
        cores.append(Core(
            first_id + len(cores), f"{node.name}[h{h0}:{h0 + k}]", stages.CORE_TYPE[node.kind], node.name, node.layer,
            axons, neurons,
            synapse_bits=_kv_bits(k, k * per_head, a, lim),
            synapse_entries=k * a["max_seq_len"] * a["head_dim"],
            params={"n_heads": k, "head_dim": a["head_dim"], "max_seq_len": a["max_seq_len"],
                    "group": a["n_heads"] // a["n_kv_heads"], "kv_head0": g0, "head0": h0,
                    "n_spike_axons": k * per_head, "weight_bits": a["weight_bits"]},
            payload_bound=q_max * kv_max * per_head,
        ))
    bound = max(1, -(-_kv_bits(a["n_heads"], a["n_heads"] * per_head, a, lim) // lim.synapse_memory_bits))
    return cores, bound


def graded_bounds(node, model) -> dict:
    """Output segment -> the largest |value| a neuron unit or the host sends on it, proved: the
    residual hand-off saturates at resid_max and travels in pieces (`units.carried`), the head's
    ratio is `fixedpoint.ratio_bound`, KV writes are kv-bit integers, spikes are ±1; the host's
    embedding pieces from its table."""
    p = node.attrs["params"]
    if node.kind is NodeKind.HOST:
        return {"embed": piece_bound(int(hand_off(np.abs(p["embed"]).max(initial=0), p)), p)}
    out = {}
    for seg in node.outputs.sizes:
        if seg == "resid_out":
            out[seg] = piece_bound(int(p["resid_max"]), p)
        elif seg == "ratio":
            out[seg] = fx.ratio_bound(model.config.dim, int(p["eps_fx"]))
        elif seg.endswith("_write"):
            out[seg] = fx.qmax(model.quant.kv_bits)
        else:
            out[seg] = 1
    return out


def unit_span(n_axons: int, n_neurons: int, lim) -> int:
    return max(1, -(-n_axons // lim.max_input_axons), -(-n_neurons // lim.max_neurons))


def tile(net: Network, progress: bool = False) -> Network:
    net.need("tile", "graph")
    lim = net.hw.core
    spec = net.model.quant
    cores, bounds = [], {}
    for node in tqdm(list(net.nodes.values()), desc="tile", unit="stage", disable=None if progress else True, leave=False):
        if node.kind is NodeKind.STATIC:
            made, bounds[node.name] = _static_cores(node, lim, spec.q_max(stages.stage_of(node.name).input), len(cores))
        elif node.kind in stages.KV_KINDS:
            made, bounds[node.name] = _kv_cores(node, lim, spec.q_max(stages.stage_of(node.name).input), len(cores))
        else:
            unit = node.kind is NodeKind.UNIT
            span = unit_span(node.inputs.total, node.outputs.total, lim) if unit else 0
            made = [Core(len(cores), node.name, stages.CORE_TYPE[node.kind], node.name, node.layer,
                         np.arange(node.inputs.total), np.arange(node.outputs.total),
                         params=dict(node.attrs.get("params", {})), span=span,
                         payload_bound=max(graded_bounds(node, net.model).values()))]
            bounds[node.name] = span
        cores += made
    return net.add("tile", cores=tuple(cores), bounds=bounds)
