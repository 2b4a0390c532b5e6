"""Pass 7: write the build directory (DESIGN §5) — self-contained, versioned, deterministic, atomic."""

import json
import os
import shutil

import numpy as np

from sdllm.compiler.ir import Network
from sdllm.compiler.report import build_report, format_report
from sdllm.errors import SdllmError

BUILD_FORMAT = "sdllm-build"
BUILD_FORMAT_VERSION = 1


def _split_params(params: dict):
    scalars, arrays = {}, {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            arrays[k] = v
        else:
            scalars[k] = int(v) if isinstance(v, (int, np.integer)) else v
    return scalars, arrays


def network_document(net: Network, save) -> dict:
    """The JSON description of the network; `save(name, array)` stores an array, returns its path."""
    cores = []
    for c in net.cores:
        scalars, arrays = _split_params(c.params)
        arrays = {**arrays, **c.arrays, "axons": c.axons, "neurons": c.neurons}
        cores.append({
            "id": c.id, "name": c.name, "type": c.type, "node": c.node, "layer": c.layer,
            "chip": c.chip, "position": list(c.position),
            "n_axons": c.n_axons, "n_neurons": c.n_neurons,
            "synapse_bits": c.synapse_bits, "synapse_entries": c.synapse_entries,
            "params": scalars,
            "arrays": {k: save(f"c{c.id:04d}.{k}", v) for k, v in sorted(arrays.items())},
            "routes": [
                {"dest": d, "src": save(f"c{c.id:04d}.r{d:04d}.src", s), "dst": save(f"c{c.id:04d}.r{d:04d}.dst", t)}
                for d, s, t in c.routes
            ],
        })
    return {
        "format": BUILD_FORMAT,
        "format_version": BUILD_FORMAT_VERSION,
        "model": {"config": net.blob["config"], "quant": net.blob["quant"]},
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


def emit(net: Network, out_dir: str) -> dict:
    out_dir = os.path.abspath(out_dir)
    _check_output(out_dir)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    old = f"{out_dir}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "arrays"))
    try:
        def save(name, array):
            rel = f"arrays/{name}.npy"
            np.save(os.path.join(tmp, rel), np.ascontiguousarray(array, dtype=np.int64))
            return rel

        doc = network_document(net, save)
        report = build_report(net)
        with open(os.path.join(tmp, "network.json"), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
        with open(os.path.join(tmp, "report.txt"), "w") as f:
            f.write(format_report(report))
        if os.path.exists(out_dir):
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return report
