"""The compiler's sink: the finished network -> a build directory (`sdllm.formats.build`).

Arrays go to arrays/*.npy in the narrowest integer type that holds them; index arrays that are
plain ranges are written as [start, stop] in the JSON. Synapse tables are cut from one stage's
weights at a time. The mapping report (text, JSON, HTML) is written beside the network.
"""

import numpy as np
from tqdm import tqdm

from sdllm.compiler.html_report import format_html
from sdllm.compiler.ir import Network
from sdllm.compiler.report import build_report, format_report
from sdllm.compiler.synapses import synapse_arrays
from sdllm.formats import build
from sdllm.stages import CoreType, NodeKind


def _split_params(params: dict):
    scalars, arrays = {}, {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            arrays[k] = v
        else:
            scalars[k] = int(v) if isinstance(v, (int, np.integer)) else v
    return scalars, arrays


def _is_range(a: np.ndarray) -> bool:
    return a.ndim == 1 and len(a) > 0 and int(a[-1]) - int(a[0]) == len(a) - 1 and bool((np.diff(a) == 1).all())


def network_document(net: Network, save, progress: bool = False) -> dict:
    """The JSON description of the network; `save(name, array)` stores an array, returns its path."""
    net.need("emit", "graph", "cores", "routes", "placement", "schedule")
    model = net.model
    synapses, by_node = {}, net.cores_by_node()
    for node in tqdm([n for n in net.nodes.values() if n.kind is NodeKind.STATIC], desc="emit", unit="stage",
                     disable=None if progress else True, leave=False):
        w = node.weight.load()
        for c in by_node[node.name]:
            if c.type == CoreType.SYNAPSE:
                synapses[c.id] = {k: save(f"c{c.id:05d}.{k}", v) for k, v in synapse_arrays(c, w).items()}
    cores = []
    for c in net.cores:
        scalars, arrays = _split_params(c.params)
        saved = {k: save(f"c{c.id:05d}.{k}", v) for k, v in sorted(arrays.items())}
        saved.update(synapses.get(c.id, {}))
        for k, v in (("axons", c.axons), ("neurons", c.neurons)):
            saved[k] = [int(v[0]), int(v[-1]) + 1] if _is_range(v) else save(f"c{c.id:05d}.{k}", v)
        table = net.routes[c.id]
        rows = np.concatenate([np.hstack([np.full((len(t), 1), d), t]) for d, t in table.routes]) if table.routes else None
        positions = net.positions(c.id)
        cores.append({
            "id": c.id, "name": c.name, "type": c.type.value, "node": c.node, "layer": c.layer,
            "chip": net.chip(c.id), "position": list(positions[0]) if positions else [-1, -1],
            "positions": [list(p) for p in positions], "span": c.span,
            "n_axons": c.n_axons, "n_neurons": c.n_neurons,
            "synapse_bits": c.synapse_bits, "synapse_entries": c.synapse_entries,
            "table_entries": table.entries, "table_compressed": table.compressed,
            "payload_bound": c.payload_bound,
            "params": scalars,
            "arrays": dict(sorted(saved.items())),
            "routes": save(f"c{c.id:05d}.routes", rows) if rows is not None else None,
        })
    return {
        "format": build.FORMAT,
        "format_version": build.FORMAT_VERSION,
        "model": {"config": model.config.to_dict(), "quant": model.quant.to_dict(), "synthetic": model.synthetic},
        "tokenizer": model.tokenizer,
        "hw": net.hw.raw,
        "schedule": net.schedule,
        "nodes": {n.name: {"kind": n.kind.value, "layer": n.layer, "inputs": n.inputs.to_json(), "outputs": n.outputs.to_json()}
                  for n in net.nodes.values()},
        "edges": [[s, d, e["src_seg"], e["dst_seg"], e["size"]] for s, d, e in net.graph.edges.edges(data=True)],
        "cores": cores,
    }


def build_bytes(net: Network) -> int:
    """The build's size on disk, at the least: every synapse core's table (dense: half a byte or a
    byte per weight; sparse: a weight and a neuron index per non-zero, a pointer per axon), a
    routing-table row per route run, and the JSON of each core."""
    total = 0
    for c in net.cores:
        if c.type == CoreType.SYNAPSE:
            dense = c.params["encoding"] == "dense"
            total += (c.synapse_entries + 1) // 2 if dense and c.params["weight_bits"] <= 4 else c.synapse_entries
            total += 0 if dense else c.synapse_entries + c.n_axons
        total += 4 * net.routes[c.id].entries + 500
    return total


def emit(net: Network, out_dir: str, progress: bool = False) -> dict:
    """Write the build directory atomically; returns the mapping report (as report.json holds it)."""
    net.need("emit", "checked")
    with build.BuildWriter(out_dir, build_bytes(net)) as w:
        doc = network_document(net, w.array, progress)
        report = build_report(net)
        w.json("network.json", doc)
        w.json("report.json", report)
        w.text("report.txt", format_report(report))
        w.text("report.html", format_html(report))
    return report
