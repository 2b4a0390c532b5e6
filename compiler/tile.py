"""Pass 2: split every node into neuron cores that fit the per-core limits.

Static stages are cut into a grid of axon (fan-in) x neuron (fan-out) blocks; blocks that share
neurons send partial sums to the same unit axons, where they add up. KV-cache stages are cut by
query heads. Units and the host stay whole.
"""

import numpy as np

from sdllm.compiler.ir import Core, Network
from sdllm.errors import SdllmError

MAX_SPLIT = 64


def synapse_table(w: np.ndarray):
    """CSR by axon of a (neurons, axons) block: (axon_ptr, neuron_index, weight), zeros not stored."""
    axon, neuron = np.nonzero(w.T)  # row-major over wᵀ: by axon, then neuron
    ptr = np.zeros(w.shape[1] + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(axon, minlength=w.shape[1]))
    return ptr, neuron.astype(np.int64), w[neuron, axon].astype(np.int64)


def static_bits(nnz_per_axon: np.ndarray, weight_bits: int, lim) -> int:
    return int(len(nnz_per_axon) * lim.axon_overhead_bits + nnz_per_axon.sum() * (weight_bits + lim.synapse_index_bits))


def _block_bits(nz, a_parts, n_parts, wb, lim) -> np.ndarray:
    """Synapse bits of every (neuron part, axon part) block, (n_s, a_s)."""
    per_axon = np.add.reduceat(nz, [n[0] for n in n_parts], axis=0)  # (n_s, axons): entries per axon per neuron part
    entries = np.add.reduceat(per_axon, [a[0] for a in a_parts], axis=1)
    return np.array([len(a) for a in a_parts])[None, :] * lim.axon_overhead_bits + entries * (wb + lim.synapse_index_bits)


def min_static_cores(nnz: int, n_axons: int, weight_bits: int, lim) -> int:
    """Cores a static stage needs at least: its synapse bits, every axon stored once, over a core's."""
    bits = n_axons * lim.axon_overhead_bits + nnz * (weight_bits + lim.synapse_index_bits)
    return max(1, -(-bits // lim.synapse_memory_bits))


def _grid(node, lim):
    """Smallest (axon splits, neuron splits) whose every block fits a core; neuron splits first.
    The search starts at the stage's lower bound on cores."""
    w = node.weight
    nz = (w != 0).astype(np.int64)
    wb = node.attrs["weight_bits"]
    start = min_static_cores(int(nz.sum()), w.shape[1], wb, lim)
    for total in range(start, MAX_SPLIT * MAX_SPLIT + 1):
        for a_s in range(1, min(total, MAX_SPLIT) + 1):
            if total % a_s:
                continue
            n_s = total // a_s
            if n_s > MAX_SPLIT or n_s > w.shape[0] or a_s > w.shape[1]:
                continue
            a_parts = np.array_split(np.arange(w.shape[1]), a_s)
            n_parts = np.array_split(np.arange(w.shape[0]), n_s)
            if len(a_parts[0]) > lim.max_input_axons or len(n_parts[0]) > lim.max_neurons:
                continue
            if (_block_bits(nz, a_parts, n_parts, wb, lim) <= lim.synapse_memory_bits).all():
                return a_parts, n_parts
    per_axon = static_bits(nz[:, :1].sum(0), wb, lim)
    raise SdllmError(
        f"stage {node.name}: does not fit any core: one axon needs {per_axon} synapse bits "
        f"of {lim.synapse_memory_bits} available and {MAX_SPLIT}x{MAX_SPLIT} blocks do not suffice"
    )


def _kv_bits(n_heads: int, n_spike_axons: int, a: dict, lim) -> int:
    entries = n_heads * a["max_seq_len"] * a["head_dim"]
    return entries * (a["weight_bits"] + lim.synapse_index_bits) + n_spike_axons * lim.axon_overhead_bits


def _kv_tiles(node, lim):
    a = node.attrs
    nh, hd, S, group = a["n_heads"], a["head_dim"], a["max_seq_len"], a["n_heads"] // a["n_kv_heads"]
    per_head_axons = hd if node.kind == "kv_qk" else S
    per_head_out = S if node.kind == "kv_qk" else hd
    for n_s in range(1, nh + 1):
        if nh % n_s:
            continue
        k = nh // n_s
        if _kv_bits(k, k * per_head_axons, a, lim) <= lim.synapse_memory_bits and k * per_head_out <= lim.max_neurons:
            tiles = []
            for h0 in range(0, nh, k):
                g0, g1 = h0 // group, (h0 + k - 1) // group + 1
                spikes = np.arange(h0 * per_head_axons, (h0 + k) * per_head_axons)
                write = nh * per_head_axons + np.arange(g0 * hd, g1 * hd)
                tiles.append((np.concatenate([spikes, write]), np.arange(h0 * per_head_out, (h0 + k) * per_head_out), h0, k, g0))
            return tiles
    raise SdllmError(
        f"stage {node.name}: one head's KV cache needs {_kv_bits(1, per_head_axons, a, lim)} synapse bits, "
        f"a core holds {lim.synapse_memory_bits}"
    )


def tile(net: Network) -> Network:
    lim = net.hw.core
    for node in net.nodes.values():
        if node.kind == "synapse":
            a_parts, n_parts = _grid(node, lim)
            for ai, axons in enumerate(a_parts):
                for ni, neurons in enumerate(n_parts):
                    block = node.weight[np.ix_(neurons, axons)]
                    ptr, idx, wts = synapse_table(block)
                    suffix = f"[{ni}]" if len(a_parts) == 1 else f"[{ni},{ai}]"
                    net.cores.append(Core(
                        len(net.cores), node.name + suffix, "synapse", node.name, node.layer, axons, neurons,
                        synapse_bits=static_bits(np.diff(ptr), node.attrs["weight_bits"], lim),
                        synapse_entries=int(ptr[-1]),
                        arrays={"axon_ptr": ptr, "neuron_index": idx, "weight": wts},
                        params={"weight_bits": node.attrs["weight_bits"]},
                    ))
        elif node.kind in ("kv_qk", "kv_pv"):
            a = node.attrs
            for axons, neurons, h0, k, g0 in _kv_tiles(node, lim):
                n_spike = k * (a["head_dim"] if node.kind == "kv_qk" else a["max_seq_len"])
                net.cores.append(Core(
                    len(net.cores), f"{node.name}[h{h0}:{h0 + k}]", node.kind, node.name, node.layer, axons, neurons,
                    synapse_bits=_kv_bits(k, n_spike, a, lim),
                    synapse_entries=k * a["max_seq_len"] * a["head_dim"],
                    params={"n_heads": k, "head_dim": a["head_dim"], "max_seq_len": a["max_seq_len"],
                            "group": a["n_heads"] // a["n_kv_heads"], "kv_head0": g0, "head0": h0,
                            "n_spike_axons": n_spike, "weight_bits": a["weight_bits"]},
                ))
        else:
            kind = "neuron_unit" if node.kind == "unit" else "host_io"
            net.cores.append(Core(
                len(net.cores), node.name, kind, node.name, node.layer,
                np.arange(node.inputs.total), np.arange(node.outputs.total), params=dict(node.attrs.get("params", {})),
            ))
    return net


def lower_bound(net: Network) -> dict:
    """node -> cores it needs at least: its resource totals (synapse bits with every axon stored
    once, neurons) over one core's capacity. Units and the host count one core each."""
    lim = net.hw.core
    out = {}
    for node in net.nodes.values():
        if node.kind == "synapse":
            nz = int(np.count_nonzero(node.weight))
            bound = max(min_static_cores(nz, node.weight.shape[1], node.attrs["weight_bits"], lim),
                        -(-node.weight.shape[0] // lim.max_neurons))
        elif node.kind in ("kv_qk", "kv_pv"):
            a = node.attrs
            axons = a["n_heads"] * (a["head_dim"] if node.kind == "kv_qk" else a["max_seq_len"])
            bound = max(1, -(-_kv_bits(a["n_heads"], axons, a, lim) // lim.synapse_memory_bits))
        else:
            bound = 0 if node.kind == "host" else 1
        out[node.name] = bound
    return out
