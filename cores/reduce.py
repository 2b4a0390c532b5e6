"""Reduce core: adds the partial sums of a static stage whose fan-in is cut into a parts.

A stage wider than a core's axons is tiled into fan-in parts (`cores.synapse`); each part's
synapse core sends its partial sums p_a (graded spikes) at the stage window's last phase. A reduce
core owns outputs j0 .. j0 + m − 1 of the stage; its axon a·m + j carries part a of output j.
At phase `at` = last + 1 it receives x and sends

    y_j = Σ_{a < parts} x_{a·m + j}                      (one more timestep for the stage)

SOPs: one per non-zero partial received (each axon is one synapse of weight 1;
`stages.reduce_sops`). Its output is bounded by Q · the largest full-row Σ|w| of its outputs.
"""

import numpy as np

from sdllm import stages
from sdllm.cores.core import Core
from sdllm.cores.stepping import CoreBehaviour
from sdllm.errors import SdllmError
from sdllm.stages import CoreType

WEIGHT_BITS = 1  # a reduce core's synapses all have weight 1


def count(n_out: int, parts: int, lim) -> int:
    """Reduce cores a stage of n_out outputs cut into `parts` fan-in parts needs."""
    if parts == 1:
        return 0
    per = min(lim.max_input_axons // parts, lim.max_neurons)
    return -(-n_out // per)


def tile(node, parts: int, row_sums, lim, q_max: int, first_id: int) -> list:
    """The reduce cores of a stage cut into `parts` fan-in parts; row_sums: Σ|w| of each output's full row."""
    n_out, per = len(row_sums), min(lim.max_input_axons // parts, lim.max_neurons)
    cores = []
    for r, r0 in enumerate(range(0, n_out, per)):
        r1 = min(r0 + per, n_out)
        n_ax = parts * (r1 - r0)
        cores.append(Core(
            first_id + len(cores), f"{node.name}.reduce[{r}]", CoreType.REDUCE, node.name, node.layer,
            np.arange(n_ax), np.arange(r0, r1),
            synapse_bits=n_ax * (lim.axon_overhead_bits + WEIGHT_BITS + lim.synapse_index_bits),
            synapse_entries=n_ax,
            params={"weight_bits": WEIGHT_BITS, "fan_in_parts": parts},
            payload_bound=q_max * int(row_sums[r0:r1].max(initial=0)),
        ))
    return cores


class ReduceCore(CoreBehaviour):
    def __init__(self, core, build, timeline):
        super().__init__(core, build, timeline)
        self.at = build.schedule.stages[core.node].last + 1
        self.parts = core.params["fan_in_parts"]

    def phases(self) -> set:
        return {self.at}

    def step(self, token, phase, x):
        if phase != self.at:
            return self.zeros
        self.sops[token] += stages.reduce_sops(x)
        return x.reshape(self.parts, -1).sum(0)


def onward(core, name: str) -> tuple:
    """Where a reduce core's outputs go, for the fast executor's fold: (its outputs sorted, the
    unit axon each is routed to). It must send to its unit alone."""
    if len(core.routes) != 1:
        raise SdllmError(f"build: stage {name}: reduce core {core.name} sends to {len(core.routes)} cores, not to its unit alone")
    ((_, src, dst),) = core.routes
    order = np.argsort(src)
    return src[order], dst[order]


def through(onward_map: tuple, axons, n_neurons: int):
    """The unit axons that partial sums arriving on a reduce core's `axons` reach (axon a·m + j adds into output j)."""
    src, dst = onward_map
    return dst[np.searchsorted(src, axons % n_neurons)]


def core_sops(partial_sums: list, core, n_tokens: int) -> np.ndarray:
    """Per token, the SOPs of a reduce core from the partial sums its stage's tiles send it,
    [(tile core, sums (tokens, tile outputs))]: the non-zero ones routed to it."""
    count_ = np.zeros(n_tokens, np.int64)
    for tile_core, sums in partial_sums:
        for dest, src, _ in tile_core.routes:
            if dest == core.id:
                count_ += np.count_nonzero(sums[:, src], axis=1)
    return count_
