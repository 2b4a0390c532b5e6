"""sdllm.cores (installed from cores/) — one module per core type, each owning how the type tiles
(for the compiler), what it does in one timestep (for the runtime: the lockstep simulator and
the Lava Processes step these), its part in the fast executor's fold and its SOP rule:

    synapse  a block of a static stage's weights          reduce  adds a split stage's partial sums
    kv       dynamic synapses holding a head group's KV cache
    unit     a decoder layer's programmable neurons        host    the off-chip boundary

Layer: imports the base and models; the compiler and the runtime import it, never each other.
"""

from sdllm import stages
from sdllm.cores import host, kv, reduce, synapse, unit
from sdllm.stages import CoreType, NodeKind

BEHAVIOURS = {CoreType.SYNAPSE: synapse.SynapseCore, CoreType.REDUCE: reduce.ReduceCore, CoreType.KV_QK: kv.KvCore,
              CoreType.KV_PV: kv.KvCore, CoreType.NEURON_UNIT: unit.NeuronUnitCore}


def tile(node, lim, model, first_id: int):
    """(logical cores, the lower bound on their count, each input's fan-out or None) of one
    operator-graph node."""
    if node.kind is NodeKind.STATIC:
        return synapse.tile(node, lim, model.quant.of_stage(node.name).q_max, first_id)
    if node.kind in stages.KV_KINDS:
        return kv.tile(node, lim, model.quant.of_stage(node.name).q_max, first_id)
    if node.kind is NodeKind.UNIT:
        return unit.tile(node, lim, model, first_id)
    return host.tile(node, model, first_id)


def behaviour(core, build, timeline, prompt, sampler):
    """What a core of the build does in each step (`cores.stepping.CoreBehaviour`)."""
    if core.type == CoreType.HOST:
        return host.HostCore(core, build, timeline, prompt, sampler)
    return BEHAVIOURS[CoreType(core.type)](core, build, timeline)
