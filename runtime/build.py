"""Read a build directory (DESIGN §5). The runtime never reads model.pt: everything comes from here."""

import json
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sdllm import nibbles
from sdllm.errors import SdllmError

BUILD_FORMAT = "sdllm-build"
BUILD_FORMAT_VERSION = 2


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
    span: int = 1  # physical cores

    def weights(self) -> np.ndarray:
        """A synapse core's (neurons, axons) weights, from either encoding of its table."""
        p = self.params
        if "weight_dense" in p:
            return p["weight_dense"].reshape(self.n_neurons, self.n_axons)
        w = np.zeros((self.n_neurons, self.n_axons), np.int64)
        w[p["neuron_index"], np.repeat(np.arange(self.n_axons), np.diff(p["axon_ptr"]))] = p["weight"]
        return w


@dataclass
class Build:
    path: str
    doc: dict
    cores: list

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

    @cached_property
    def hw(self):
        from sdllm.compiler.hw import from_raw

        return from_raw(self.doc["hw"], self.path)

    def link(self, src: int, dst: int) -> tuple:
        """(NoC hops, chip crossings) of a route in the system-wide mesh; (0, 0) to or from the off-chip host."""
        a, b = self.cores[src], self.cores[dst]
        if a.chip < 0 or b.chip < 0:
            return 0, 0
        hops, crossings = self.hw.links([a.chip], [a.position], [b.chip], [b.position])
        return int(hops[0]), int(crossings[0])


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
        if isinstance(rel, list):  # a range, [start, stop]
            return np.arange(*rel, dtype=np.int64)
        try:
            return np.load(os.path.join(path, rel), allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as e:
            raise SdllmError(f"{path}: array {rel} unreadable ({e})") from None

    from sdllm.compiler.route import expand

    cores = []
    for c in doc["cores"]:
        params = dict(c["params"])
        params.update({k: array(rel) for k, rel in c["arrays"].items()})
        if "weight_nibbles" in params:
            params["weight_dense"] = nibbles.unpack(params.pop("weight_nibbles"), c["n_neurons"] * c["n_axons"])
        routes = []
        if c["routes"]:
            table = array(c["routes"])
            for dest in np.unique(table[:, 0]):
                routes.append((int(dest), *expand(table[table[:, 0] == dest][:, 1:])))
        cores.append(CoreImage(c["id"], c["name"], c["type"], c["node"], c["layer"], c["chip"],
                               c["n_axons"], c["n_neurons"], params, routes, tuple(c["position"]), c["span"]))
    return Build(path, doc, cores)
