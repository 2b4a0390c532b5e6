"""Pass code_choice: the spike code that carries each stage's input — the compiler's choice, since
every code carries the same integers (`sdllm.codes`: the paper's ternary trains, bit planes,
signed-digit planes, graded spikes; the ones the target's cores take, `CoreLimits.spike_codes`).

What a code costs a stage per token, in the target's own terms (`hw_configs`' energy constants):

    E(c) = e_sop(c) · Σ_j ev_c(j) · fan(j)  +  e_nu · N · T_c  +  e_spike · Σ_j ev_c(j) · cores(j)
    L(c) = T_c + 1                                                  (+ 1 with reduce cores)

ev_c(j): events per token on input j in code c (measured by `rates` on calibration text, or —
without a measurement — the average over inputs spread evenly on their range); fan(j): the
synapses one event reads (its non-zero weights; a cached key per position attended, a value per
channel); e_sop: a binary or a graded synaptic op; N: the neurons of the stage's cores, each
updated once per step of the window (a plane code's doubling included); cores(j): the cores the
input is routed to (a packet each); T_c: the window; L: the stage's share of the token period.

The choice minimises energy × latency per token, (Σ E)(Σ L + the period's fixed steps), over all
stages at once (coordinate descent from each stage's cheapest code, in graph order: deterministic):
a chip is used for its energy, but a code that saves 1% of energy at twice the steps is no bargain
for generation, whose tokens follow one another. Energy alone would pick signed-digit planes over
graded spikes where they save a few synaptic ops at four times the window. `--code paper` keeps
the paper's trains (`codes.reference`: ternary up to 4 bits, bit planes above); `--code NAME`
forces one code everywhere; a code the target does not take is one line. Adds `codes`.
"""

import numpy as np

from sdllm import codes, stages
from sdllm.compiler.ir import CodeChoice, CodeCost, Network
from sdllm.errors import SdllmError
from sdllm.stages import NodeKind

RULE = "least energy x latency per token"


def fixed_steps(net: Network) -> int:
    """Steps of the token period no code changes: each layer's hand-off, the host's."""
    return net.model.config.n_layers + 2


def _uniform_events(code: str, bits: int, signed: bool) -> float:
    """Events per value in a code for values spread evenly over their range."""
    q = codes.qmax(bits)
    values = np.arange(-q if signed else 0, q + 1)
    return float(codes.CODES[code].spikes(values, bits).mean())


def stage_costs(net: Network, node: str, accepted) -> dict:
    """{code: CodeCost} of carrying a stage's input in each code the target takes."""
    model, energy = net.model, net.hw.energy
    stage = stages.stage_of(node)
    bits = model.quant.of_stage(node).bits
    n_in = stage.n_in(model.config)
    consumers = [c for c in net.cores_of(node) if c.has_node_inputs]
    routed = np.bincount(np.concatenate([c.axons[c.axons < n_in] for c in consumers]), minlength=n_in)[:n_in]
    neurons = sum(c.n_neurons for c in consumers)
    if stage.static:
        fan = np.asarray(net.fanout[node], np.float64)
    else:  # Q·Kᵀ reads a cached key per position attended: (tokens + 1) / 2 on average over a window
        positions = net.rates.tokens if net.rates else model.config.max_seq_len
        fan = np.full(n_in, float(stage.fanout(model.config, pos=(positions - 1) / 2)))
    out = {}
    for code in accepted:
        ev = (net.rates.events[node][code] if net.rates else
              np.full(n_in, _uniform_events(code, bits, stage.input.signed)))
        ev = np.asarray(ev, np.float64)[:n_in]
        sops = float(ev @ fan)
        steps = codes.steps(code, bits)
        e_sop = energy["graded_sop_pj"] if code == "graded" else energy["sop_pj"]
        packets = float(ev @ routed)
        updates = float(neurons * steps)
        e = sops * e_sop + updates * energy["neuron_update_pj"] + packets * energy["spike_in_tile_pj"]
        out[code] = CodeCost(e, steps + 1 + (node in _reduced(net)), sops, updates, packets)
    return out


def _reduced(net: Network) -> set:
    return {c.node for c in net.cores if c.type == stages.CoreType.REDUCE}


def least_edp(costs: dict, fixed: int) -> dict:
    """node -> code minimising (Σ energy)(Σ steps + fixed), by coordinate descent from each
    stage's least-energy code."""
    pick = {node: min(c, key=lambda k: (c[k].energy_pj, c[k].steps)) for node, c in costs.items()}
    energy = sum(costs[n][k].energy_pj for n, k in pick.items())
    steps = fixed + sum(costs[n][k].steps for n, k in pick.items())
    for _ in range(len(costs)):
        changed = False
        for node, options in costs.items():
            now = options[pick[node]]
            e0, s0 = energy - now.energy_pj, steps - now.steps
            best = min(options, key=lambda k: ((e0 + options[k].energy_pj) * (s0 + options[k].steps), options[k].steps))
            if best != pick[node] and (e0 + options[best].energy_pj) * (s0 + options[best].steps) < energy * steps:
                pick[node], energy, steps, changed = best, e0 + options[best].energy_pj, s0 + options[best].steps, True
        if not changed:
            break
    return pick


def choose(net: Network, code: str = "auto") -> Network:
    net.need("code_choice", "graph", "cores", "fanout")
    accepted = net.hw.core.spike_codes
    if code not in codes.CHOICES:
        raise SdllmError(f"--code: one of {', '.join(codes.CHOICES)}, got {code!r}")
    nodes = [n.name for n in net.nodes.values() if n.kind not in (NodeKind.UNIT, NodeKind.HOST)]
    if code == "paper":
        pick = {node: codes.reference(net.model.quant.of_stage(node).bits) for node in nodes}
    else:
        pick = {node: code for node in nodes}
    missing = sorted({c for c in pick.values() if c not in accepted and c != "auto"})
    if missing:
        raise SdllmError(f"--code {code}: target {net.hw.name} takes {', '.join(accepted)}, not {', '.join(missing)}")
    costs = {node: stage_costs(net, node, accepted) for node in nodes}
    rule = f"--code {code}"
    if code == "auto":
        pick, rule = least_edp(costs, fixed_steps(net)), RULE
    return net.add("code_choice", codes=CodeChoice(pick, costs, rule))
