"""Read a build directory (DESIGN §5). The runtime never reads model.pt: everything comes from here."""

import json
import os
from dataclasses import dataclass

import numpy as np

from sdllm.errors import SdllmError

BUILD_FORMAT = "sdllm-build"
BUILD_FORMAT_VERSION = 1


@dataclass
class CoreImage:
    id: int
    name: str
    type: str
    node: str
    layer: int
    chip: int
    n_axons: int
    n_neurons: int
    params: dict  # scalars and arrays together
    routes: list  # [(dest id, src index array, dest axon array)]
    position: tuple = (-1, -1)  # on the chip's mesh


@dataclass
class Build:
    path: str
    doc: dict
    cores: list
    collapsed: bool = False  # spike trains delivered as their counts in one step (the fast backend)

    def with_collapsed_windows(self) -> "Build":
        """The same network with every spike train collapsed to one step carrying its spike
        counts (Σ_t s_t = q): synapses add W·q at once, SOPs are still |q| x fan-out."""
        from sdllm.compiler.schedule import timestep_schedule

        doc = dict(self.doc, schedule=timestep_schedule(1, self.config["n_layers"]))
        return Build(self.path, doc, self.cores, collapsed=True)

    @property
    def schedule(self) -> dict:
        return self.doc["schedule"]

    @property
    def config(self) -> dict:
        return self.doc["model"]["config"]

    def segments(self, node: str, side: str) -> dict:
        """name -> (start, stop) of a node's 'inputs' or 'outputs'."""
        out, off = {}, 0
        for name, n in self.doc["nodes"][node][side]:
            out[name] = (off, off + n)
            off += n
        return out

    def link(self, src: int, dst: int) -> tuple:
        """(mesh hops, chip crossings) of a route; (0, 0) to or from the off-chip host."""
        a, b = self.cores[src], self.cores[dst]
        if a.chip < 0 or b.chip < 0:
            return 0, 0
        if a.chip != b.chip:
            return 0, 1  # assumption: a chip-to-chip spike is costed as one crossing, no mesh hops
        return abs(a.position[0] - b.position[0]) + abs(a.position[1] - b.position[1]), 0



def load_build(path: str) -> Build:
    doc_path = os.path.join(path, "network.json")
    if not os.path.isfile(doc_path):
        raise SdllmError(f"{path}: not a build directory (no network.json); run sdllm-compile first")
    try:
        with open(doc_path) as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SdllmError(f"{doc_path}: unreadable ({e})") from None
    if doc.get("format") != BUILD_FORMAT or doc.get("format_version") != BUILD_FORMAT_VERSION:
        raise SdllmError(
            f"{path}: build format {doc.get('format')!r} version {doc.get('format_version')!r} is not supported "
            f"(this sdllm reads {BUILD_FORMAT} version {BUILD_FORMAT_VERSION})"
        )

    def array(rel):
        try:
            return np.load(os.path.join(path, rel), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SdllmError(f"{path}: array {rel} unreadable ({e})") from None

    cores = []
    for c in doc["cores"]:
        params = dict(c["params"])
        params.update({k: array(rel) for k, rel in c["arrays"].items()})
        routes = [(r["dest"], array(r["src"]), array(r["dst"])) for r in c["routes"]]
        cores.append(CoreImage(c["id"], c["name"], c["type"], c["node"], c["layer"], c["chip"],
                               c["n_axons"], c["n_neurons"], params, routes, tuple(c["position"])))
    return Build(path, doc, cores)
