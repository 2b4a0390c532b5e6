"""The compiler's IR: operator graph -> cores -> placed, routed, scheduled network.

Index spaces. Every node of the operator graph (a neuron unit, a spike-driven stage, the host)
has named input and output *segments*: contiguous ranges of its axons and of its outputs.
An operator-graph edge connects one output segment to one input segment of equal size.
Tiling splits a stage into cores, each owning an axon range and a neuron range of the stage;
routing then maps every (source core, output index) to (destination core, axon index).
"""

from dataclasses import dataclass, field

import networkx as nx
import numpy as np


@dataclass
class Segments:
    """Named contiguous ranges, in declaration order."""

    sizes: dict = field(default_factory=dict)

    def add(self, name: str, size: int) -> None:
        self.sizes[name] = int(size)

    def offset(self, name: str) -> int:
        off = 0
        for k, n in self.sizes.items():
            if k == name:
                return off
            off += n
        raise KeyError(name)

    def range(self, name: str) -> tuple:
        off = self.offset(name)
        return off, off + self.sizes[name]

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def to_json(self) -> list:
        return [[k, n] for k, n in self.sizes.items()]


@dataclass
class Node:
    """An operator-graph node: kind is 'unit', 'synapse' (static weights), 'kv_qk', 'kv_pv' or 'host'."""

    name: str
    kind: str
    layer: int
    inputs: Segments = field(default_factory=Segments)
    outputs: Segments = field(default_factory=Segments)
    weight: np.ndarray | None = None  # static synapse stages: (n_out, n_in) ints
    attrs: dict = field(default_factory=dict)


@dataclass
class Core:
    id: int
    name: str
    type: str  # 'synapse', 'kv_qk', 'kv_pv', 'neuron_unit', 'host_io'
    node: str
    layer: int
    axons: np.ndarray  # indices into the node's input space, in axon order
    neurons: np.ndarray  # indices into the node's output space, in output order
    synapse_bits: int = 0
    synapse_entries: int = 0
    arrays: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    chip: int = -1
    position: tuple = (-1, -1)
    routes: list = field(default_factory=list)  # [(dest core id, src index array, dest axon array)]

    @property
    def n_axons(self) -> int:
        return len(self.axons)

    @property
    def n_neurons(self) -> int:
        return len(self.neurons)

    @property
    def n_routes(self) -> int:
        return sum(len(src) for _, src, _ in self.routes)


@dataclass
class Network:
    """What flows through the passes; each pass fills in more of it."""

    blob: dict
    hw: object
    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    nodes: dict = field(default_factory=dict)
    cores: list = field(default_factory=list)
    schedule: dict = field(default_factory=dict)

    def add_node(self, node: Node) -> Node:
        self.nodes[node.name] = node
        self.graph.add_node(node.name, kind=node.kind)
        return node

    def connect(self, src: str, src_seg: str, dst: str, dst_seg: str) -> None:
        n_src = self.nodes[src].outputs.sizes[src_seg]
        n_dst = self.nodes[dst].inputs.sizes[dst_seg]
        if n_src != n_dst:
            raise ValueError(f"edge {src}.{src_seg} ({n_src}) -> {dst}.{dst_seg} ({n_dst}): sizes differ")
        self.graph.add_edge(src, dst, src_seg=src_seg, dst_seg=dst_seg, size=n_src)

    def cores_of(self, node: str) -> list:
        return [c for c in self.cores if c.node == node]
