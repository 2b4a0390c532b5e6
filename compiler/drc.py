"""Pass 6: design-rule checks — every core within its limits, or one line naming what does not fit."""

import numpy as np

from sdllm.compiler.ir import Network
from sdllm.errors import SdllmError


def _payload_bound(net: Network, core) -> int:
    """Largest |accumulator| a core can send as a graded spike."""
    q_max = (1 << (net.blob["quant"]["act_bits"] - 1)) - 1
    if core.type == "synapse":
        per_neuron = np.zeros(core.n_neurons, np.int64)
        np.add.at(per_neuron, core.arrays["neuron_index"], np.abs(core.arrays["weight"]))
        return q_max * int(per_neuron.max(initial=0))
    if core.type in ("kv_qk", "kv_pv"):
        p = core.params
        kv_max = (1 << (p["weight_bits"] - 1)) - 1
        fan_in = p["head_dim"] if core.type == "kv_qk" else p["max_seq_len"]
        return q_max * kv_max * fan_in
    return 0


def check(net: Network) -> Network:
    lim = net.hw.core
    payload_max = (1 << (lim.graded_payload_bits - 1)) - 1
    for core in net.cores:
        if core.type == "host_io":
            continue
        where = f"stage {core.node}: core {core.name}"
        checks = [
            ("neurons", core.n_neurons, lim.max_neurons),
            ("input axons", core.n_axons, lim.max_input_axons),
            ("output routes", core.n_routes, lim.max_output_routes),
            ("synapse memory bits", core.synapse_bits, lim.synapse_memory_bits),
            ("weight bits", core.params.get("weight_bits", 0), lim.max_weight_bits),
            ("graded-spike payload", _payload_bound(net, core), payload_max),
        ]
        for what, used, available in checks:
            if used > available:
                raise SdllmError(f"{where}: {what} {used:,} exceed the {available:,} available on {net.hw.name}")
    return net
