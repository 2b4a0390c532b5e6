"""Pass rates (optional): how many events each stage's input sends per token, in every code a
compiled network may carry it in, measured by running the integer reference on calibration text —
what the code choice weighs and placement's traffic. A graded value (partial sums, keys, values,
residuals) counts one packet per value per token. Without a measurement (0 tokens, a synthetic
model) the code choice assumes inputs spread evenly over their range and placement counts one
packet per routed value. Adds `rates`."""

import numpy as np

from sdllm import codes, stages
from sdllm.compiler.ir import Network, Rates
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.corpus import calibration_windows
from sdllm.stages import NodeKind


def measure(model, n_tokens: int = 128) -> Rates:
    """Stage node ('L3.o', 'head') -> {code: mean events per token on each of its input axons}."""
    n = min(n_tokens, model.config.max_seq_len)
    tokens = calibration_windows(model.tokenizer, n, 1)[0]
    _, spikes = IntegerSDLLM(model, stream=True).forward(tokens)  # one stage's product in memory at a time
    events = {}
    for name, q in spikes.items():
        bits = model.quant.of_stage(name).bits
        flat = np.asarray(q).reshape(n, -1)
        events[name] = {c: codes.CODES[c].spikes(flat, bits).mean(0) for c in codes.CARRIED}
    return Rates(events, n)


def rates(net: Network, n_tokens: int = 0) -> Network:
    """Measure on n_tokens of calibration text; nothing to measure (0 tokens, a synthetic model): no rates."""
    if n_tokens <= 0 or net.model.synthetic:
        return net
    return net.add("rates", rates=measure(net.model, n_tokens))


def output_rates(net: Network, node) -> np.ndarray:
    """Packets per token on each of a node's outputs: a unit's spikes in the code chosen for them."""
    out = np.ones(node.outputs.total)
    if node.kind is not NodeKind.UNIT or net.rates is None:
        return out
    for seg in node.outputs.sizes:
        stage = stages.STAGES.get(seg)
        key = stage.node(node.layer) if stage else None
        if key in net.rates.events:
            a, b = node.outputs.range(seg)
            out[a:b] = net.rates.events[key][net.codes.codes[key]]
    return out
