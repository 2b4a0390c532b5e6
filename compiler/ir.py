"""The compiler's IR: what each pass reads and what it adds, as typed fields of one immutable
`Network` (a pass returns a new Network with its field filled; it never changes its input).

    lower     graph       operator graph: nodes (units, stages, host) with named segments, edges
    tile      cores       logical cores, each an axon range and a neuron range of its node
              bounds      per node, the fewest cores its resources need (the report's lower bound)
              fanout      per static stage, each input's non-zero weights
    route     routes      per core, its routing table (run-length) and table size
    rates     rates       (optional) measured events per token on every stage input, in every code
    code_choice codes     the spike code carrying each stage's input, and what each would cost
    place     placement   per core, its chip and mesh positions; the placement's traffic figures
    schedule  schedule    the timestep schedule
    drc       checked     every core within its limits

Index spaces. Every node has named input and output *segments*: contiguous ranges of its axons
and of its outputs. An edge connects one output segment to one input segment of equal size.
A core owns an axon range and a neuron range of its node; routing maps every (source core,
output index) to (destination core, axon index).
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np

from sdllm.errors import SdllmError
from sdllm.formats.hw import HwConfig
from sdllm.formats.model import ModelFile
from sdllm.schedule import Schedule
from sdllm.stages import NodeKind


@dataclass(frozen=True)
class Segments:
    """Named contiguous ranges, in declaration order."""

    sizes: dict

    @classmethod
    def of(cls, pairs) -> "Segments":
        return cls({name: int(n) for name, n in pairs})

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


@dataclass(frozen=True)
class Node:
    name: str
    kind: NodeKind
    layer: int
    inputs: Segments
    outputs: Segments
    weight: Weights | None = None  # static synapse stages
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    nodes: dict  # name -> Node, in lowering order
    edges: nx.MultiDiGraph  # node names; edge data: src_seg, dst_seg, size


@dataclass(frozen=True)
class RouteTable:
    """A core's routing table: [(destination core id, runs (k, 3): source output start,
    destination axon start, length)], and its size in entries (compressed to runs or not)."""

    routes: tuple
    entries: int
    compressed: bool

    @property
    def n_routes(self) -> int:
        """Output routes before compression: one per (output, destination core) pair."""
        return int(sum(runs[:, 2].sum() for _, runs in self.routes))


@dataclass(frozen=True)
class Placement:
    where: dict  # core id -> (chip, [(x, y) of each physical core])
    figures: dict  # method, spike-hops, chip crossings, the greedy baseline's, chip traffic, link loads


@dataclass(frozen=True)
class Rates:
    events: dict  # stage node -> {code: mean events per token on each of its input axons}
    tokens: int


@dataclass(frozen=True)
class CodeCost:
    """What carrying one stage's input in one code costs per token, in the target's terms."""

    energy_pj: float  # synaptic ops + neuron updates + spike packets
    steps: int  # the stage's share of the token period: its window and the step to the unit
    sops: float
    neuron_updates: float
    packets: float


@dataclass(frozen=True)
class CodeChoice:
    codes: dict  # stage node -> the code carrying its input
    costs: dict  # stage node -> {code: CodeCost}, the target's codes
    rule: str  # how they were chosen ("least energy x latency", or the code asked for)


@dataclass(frozen=True)
class Network:
    model: ModelFile
    hw: HwConfig
    graph: Graph | None = None
    cores: tuple | None = None
    bounds: dict | None = None
    fanout: dict | None = None
    routes: dict | None = None
    rates: Rates | None = None
    codes: CodeChoice | None = None
    placement: Placement | None = None
    schedule: Schedule | None = None
    checked: bool = False

    def need(self, by: str, *names: str) -> None:
        """A pass states what it reads: every field must have been filled by an earlier pass."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise SdllmError(f"compiler: pass {by} needs {', '.join(missing)} from an earlier pass (the pass list is out of order)")

    def add(self, by: str, **fields) -> "Network":
        """A new Network with the fields a pass adds; a field already filled is not overwritten."""
        filled = [n for n in fields if getattr(self, n) not in (None, False)]
        if filled:
            raise SdllmError(f"compiler: pass {by} would overwrite {', '.join(filled)} (run the pipeline on a fresh Network)")
        return replace(self, **fields)

    @property
    def nodes(self) -> dict:
        return self.graph.nodes

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

    def chip(self, core_id: int) -> int:
        """A placed core's chip; -1 for the off-chip host."""
        return self.placement.where[core_id][0] if core_id in self.placement.where else -1

    def positions(self, core_id: int) -> list:
        return self.placement.where[core_id][1] if core_id in self.placement.where else []
