"""Pass 7: write the build directory (DESIGN §5) — self-contained, versioned, deterministic, atomic.

Arrays go to arrays/*.npy in the narrowest integer type that holds them (the runtime reads them
back as int64); index arrays that are plain ranges are written as [start, stop] in the JSON.
Synapse tables are cut from one stage's weights at a time.
"""

import json
import os
import shutil

import numpy as np
from tqdm import tqdm

from sdllm.compiler.html_report import format_html
from sdllm.compiler.ir import Network
from sdllm.compiler.report import build_report, format_report
from sdllm.compiler.tile import synapse_arrays
from sdllm.errors import SdllmError

BUILD_FORMAT = "sdllm-build"
BUILD_FORMAT_VERSION = 2
INT_TYPES = (np.int8, np.int16, np.int32, np.int64)


def narrow(array) -> np.ndarray:
    a = np.asarray(array)
    if a.size == 0:
        return a.astype(np.int8)
    lo, hi = int(a.min()), int(a.max())
    dtype = next(t for t in INT_TYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    return np.ascontiguousarray(a, dtype=dtype)


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
    synapses, by_node = {}, net.cores_by_node()
    for node in tqdm([n for n in net.nodes.values() if n.kind == "synapse"], desc="emit", unit="stage",
                     disable=None if progress else True, leave=False):
        w = node.weight.load()
        for c in by_node[node.name]:
            if c.type == "synapse":
                synapses[c.id] = {k: save(f"c{c.id:05d}.{k}", v) for k, v in synapse_arrays(c, w).items()}
    cores = []
    for c in net.cores:
        scalars, arrays = _split_params(c.params)
        saved = {k: save(f"c{c.id:05d}.{k}", v) for k, v in sorted(arrays.items())}
        saved.update(synapses.get(c.id, {}))
        for k, v in (("axons", c.axons), ("neurons", c.neurons)):
            saved[k] = [int(v[0]), int(v[-1]) + 1] if _is_range(v) else save(f"c{c.id:05d}.{k}", v)
        table = np.concatenate([np.hstack([np.full((len(t), 1), d), t]) for d, t in c.routes]) if c.routes else None
        cores.append({
            "id": c.id, "name": c.name, "type": c.type, "node": c.node, "layer": c.layer,
            "chip": c.chip, "position": list(c.position), "positions": [list(p) for p in c.positions], "span": c.span,
            "n_axons": c.n_axons, "n_neurons": c.n_neurons,
            "synapse_bits": c.synapse_bits, "synapse_entries": c.synapse_entries,
            "table_entries": c.table_entries, "table_compressed": c.table_compressed,
            "params": scalars,
            "arrays": dict(sorted(saved.items())),
            "routes": save(f"c{c.id:05d}.routes", table) if table is not None else None,
        })
    return {
        "format": BUILD_FORMAT,
        "format_version": BUILD_FORMAT_VERSION,
        "model": {"config": net.blob["config"], "quant": net.blob["quant"], "synthetic": "synthetic" in net.blob},
        "tokenizer": net.blob["tokenizer"],
        "hw": net.hw.raw,
        "schedule": net.schedule,
        "nodes": {n.name: {"kind": n.kind, "layer": n.layer, "inputs": n.inputs.to_json(), "outputs": n.outputs.to_json()}
                  for n in net.nodes.values()},
        "edges": [[s, d, e["src_seg"], e["dst_seg"], e["size"]] for s, d, e in net.graph.edges(data=True)],
        "cores": cores,
    }


def _check_output(path: str) -> None:
    if os.path.exists(path) and not os.path.isfile(os.path.join(path, "network.json")):
        if not os.path.isdir(path) or os.listdir(path):
            raise SdllmError(f"-o {path}: exists and is not an sdllm build directory; refusing to replace it")


def emit(net: Network, out_dir: str, progress: bool = False) -> dict:
    out_dir = os.path.abspath(out_dir)
    _check_output(out_dir)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    old = f"{out_dir}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "arrays"))
    try:
        def save(name, array):
            rel = f"arrays/{name}.npy"
            np.save(os.path.join(tmp, rel), narrow(array))
            return rel

        doc = network_document(net, save, progress)
        report = build_report(net)
        with open(os.path.join(tmp, "network.json"), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, "report.txt"), "w") as f:
            f.write(format_report(report))
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(format_html(report))
        if os.path.exists(out_dir):
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return report
