"""A logical core, as tiling makes it from a node of the operator graph: the axon range and
neuron range of the node it owns, its synapse memory, its parameters and the largest graded
value it sends. The compiler's passes read it; the build directory stores it
(`sdllm.formats.build.CoreImage` is how the runtime reads it back)."""

from dataclasses import dataclass, field

import numpy as np

from sdllm.stages import CoreType


@dataclass(frozen=True)
class Core:
    """A logical core. `span` physical cores when one core's limits cannot hold it (a neuron unit
    whose axons exceed one core's), placed together on one chip.

    Fan-in tiles of a stage too wide for one core are `partial`: their sums go to the stage's
    `reduce` cores (axon a·m + j carries fan-in part a of the reduce core's j-th output), which
    send the stage's outputs."""

    id: int
    name: str
    type: CoreType
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
        return self.type != CoreType.REDUCE

    @property
    def on_chip(self) -> bool:
        return self.type != CoreType.HOST
