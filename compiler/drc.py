"""Pass 6: design-rule checks — every core within its limits, or one line naming what does not fit.

A core spanning k physical cores (a neuron unit) has k cores' neurons, axons, routes and memory.
"""

from sdllm.compiler.ir import Network
from sdllm.errors import SdllmError


def check(net: Network) -> Network:
    """Adds `checked`."""
    net.need("drc", "cores", "routes", "placement")
    lim = net.hw.core
    payload_max = lim.payload_max
    for core in sorted(net.cores, key=lambda c: not c.on_chip):  # the off-chip host last: only what it sends in
        where = f"stage {core.node}: core {core.name}"
        if not core.on_chip:
            if core.payload_bound > payload_max:
                raise SdllmError(f"{where}: graded-spike payload {core.payload_bound:,} (the embedding as the first layer "
                                 f"receives it) exceed the {payload_max:,} available on {net.hw.name}")
            continue
        k = core.span
        table = net.routes[core.id]
        checks = [
            ("neurons", core.n_neurons, k * lim.max_neurons),
            ("input axons", core.n_axons, k * lim.max_input_axons),
            ("routing-table entries", table.entries, k * lim.max_output_routes),
            ("synapse memory bits", core.synapse_bits, k * lim.synapse_memory_bits),
            ("weight bits", core.params.get("weight_bits", 0), lim.max_weight_bits),
            ("graded-spike payload", core.payload_bound, payload_max),
        ]
        for what, used, available in checks:
            if used > available:
                raise SdllmError(f"{where}: {what} {used:,} exceed the {available:,} available on {net.hw.name}")
        if net.chip(core.id) < 0 or len(net.positions(core.id)) != k:
            raise SdllmError(f"{where}: not placed on {k} core(s) of a chip")
    return net.add("drc", checked=True)
