"""Pass tile: every node into logical cores that fit the per-core limits — how each core type
tiles is its own module's (`sdllm.cores`): static stages into a grid of fan-in × fan-out synapse
blocks (with reduce cores where the fan-in is cut), KV stages by query heads, a neuron unit over
as many cores as its axons need, the host off-chip. Weights are loaded one stage at a time and
dropped. Adds `cores` and `bounds` (per node, the fewest cores its resources need: the report's
lower bound) and `fanout` (per static stage, each input's non-zero weights: the synapses one
event on it reads)."""

from tqdm import tqdm

from sdllm import cores as core_types
from sdllm.compiler.ir import Network


def tile(net: Network, progress: bool = False) -> Network:
    net.need("tile", "graph")
    cores, bounds, fanout = [], {}, {}
    for node in tqdm(list(net.nodes.values()), desc="tile", unit="stage", disable=None if progress else True, leave=False):
        made, bounds[node.name], fan = core_types.tile(node, net.hw.core, net.model, len(cores))
        cores += made
        if fan is not None:
            fanout[node.name] = fan
    return net.add("tile", cores=tuple(cores), bounds=bounds, fanout=fanout)
