"""The compiler's IR: operator graph -> cores -> placed, routed, scheduled network.

Index spaces. Every node of the operator graph (a neuron unit, a spike-driven stage, the host)
has named input and output *segments*: contiguous ranges of its axons and of its outputs.
An operator-graph edge connects one output segment to one input segment of equal size.
Tiling splits a stage into cores, each owning an axon range and a neuron range of the stage;
routing then maps every (source core, output index) to (destination core, axon index).
"""

from collections.abc import Callable
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


@dataclass(frozen=True)
class Weights:
    """A static stage's (n_out, n_in) integer weights, loaded on demand: the passes hold one
    stage's matrix at a time, never the whole model."""

    shape: tuple
    load: Callable[[], np.ndarray]


@dataclass
class Node:
    """An operator-graph node: kind is 'unit', 'synapse' (static weights), 'kv_qk', 'kv_pv' or 'host'."""

    name: str
    kind: str
    layer: int
    inputs: Segments = field(default_factory=Segments)
    outputs: Segments = field(default_factory=Segments)
    weight: Weights | None = None  # static synapse stages
    attrs: dict = field(default_factory=dict)


@dataclass
class Core:
    """A logical core. `span` physical cores when one core's limits cannot hold it (a neuron unit
    whose axons exceed one core's), placed together on one chip.

    Fan-in tiles of a stage too wide for one core are `partial`: their sums go to the stage's
    `reduce` cores (axon a·m + j carries fan-in part a of the reduce core's j-th output), which
    send the stage's outputs."""

    id: int
    name: str
    type: str  # 'synapse', 'reduce', 'kv_qk', 'kv_pv', 'neuron_unit', 'host_io'
    node: str
    layer: int
    axons: np.ndarray  # indices into the node's input space, in axon order (reduce: its own axons)
    neurons: np.ndarray  # indices into the node's output space, in output order
    synapse_bits: int = 0
    synapse_entries: int = 0
    params: dict = field(default_factory=dict)
    block: tuple = ()  # synapse cores: (neuron start, stop, axon start, stop) in the stage's weights
    partial: bool = False
    span: int = 1
    payload_bound: int = 0  # largest |graded value| the core sends
    chip: int = -1
    position: tuple = (-1, -1)
    positions: list = field(default_factory=list)  # every physical core's (x, y)
    routes: list = field(default_factory=list)  # [(dest core id, runs (k, 3): src start, dest axon start, length)]
    table_entries: int = 0
    table_compressed: bool = False

    @property
    def n_axons(self) -> int:
        return len(self.axons)

    @property
    def n_neurons(self) -> int:
        return len(self.neurons)

    @property
    def sends_node_outputs(self) -> bool:
        """False for a fan-in tile: its partial sums go to its stage's reduce cores."""
        return not self.partial

    @property
    def has_node_inputs(self) -> bool:
        """False for a reduce core: its axons carry partial sums, not the node's inputs."""
        return self.type != "reduce"

    @property
    def n_routes(self) -> int:
        """Output routes before compression: one per (output, destination core) pair."""
        return int(sum(runs[:, 2].sum() for _, runs in self.routes))


@dataclass
class Network:
    """What flows through the passes; each pass fills in more of it."""

    blob: dict
    hw: object
    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    nodes: dict = field(default_factory=dict)
    cores: list = field(default_factory=list)
    schedule: dict = field(default_factory=dict)
    rates: dict = field(default_factory=dict)  # stage -> measured spikes per token per input axon
    rates_tokens: int = 0
    placement: dict = field(default_factory=dict)  # the placement's figures (method, spike-hops, baseline)

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

    def cores_by_node(self) -> dict:
        """node -> its cores, in core order (one pass; for passes that visit every node)."""
        out = {name: [] for name in self.nodes}
        for c in self.cores:
            out[c.node].append(c)
        return out

    def producers(self, node: str) -> list:
        """The cores that send a node's outputs (not fan-in tiles that feed reduce cores)."""
        return [c for c in self.cores_of(node) if c.sends_node_outputs]

    def consumers(self, node: str) -> list:
        """The cores with axons of a node's inputs (not its reduce cores)."""
        return [c for c in self.cores_of(node) if c.has_node_inputs]
