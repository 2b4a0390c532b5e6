"""Pass rates (optional): spike rates of the neuron units' outputs, measured by running the
integer reference on calibration text — the traffic weights of placement. A spike output's rate
is its mean |q| (spikes per token); graded values (partial sums, keys, values, residuals) count
one packet per value per token. Without a measurement every routed value counts one packet per
token (the fan-out fallback). Adds `rates`."""

import numpy as np

from sdllm import stages
from sdllm.compiler.ir import Network, Rates
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.corpus import calibration_windows
from sdllm.stages import NodeKind


def measure(model, n_tokens: int = 128) -> Rates:
    """Stage node ('L3.o', 'head') -> mean spikes per token on each of its input axons."""
    n = min(n_tokens, model.config.max_seq_len)
    tokens = calibration_windows(model.tokenizer, n, 1)[0]
    _, spikes = IntegerSDLLM(model, stream=True).forward(tokens)  # one stage's product in memory at a time
    return Rates({name: np.abs(np.asarray(q)).reshape(n, -1).mean(0) for name, q in spikes.items()}, n)


def rates(net: Network, n_tokens: int = 0) -> Network:
    """Measure on n_tokens of calibration text; nothing to measure (0 tokens, a synthetic model): no rates."""
    if n_tokens <= 0 or net.model.synthetic:
        return net
    return net.add("rates", rates=measure(net.model, n_tokens))


def output_rates(net: Network, node) -> np.ndarray:
    """Packets per token on each of a node's outputs."""
    out = np.ones(node.outputs.total)
    per_axon = net.rates.per_axon if net.rates else {}
    if node.kind is not NodeKind.UNIT:
        return out
    for seg in node.outputs.sizes:
        stage = stages.STAGES.get(seg)
        key = stage.node(None if stage is stages.HEAD else node.layer) if stage else None
        if key in per_axon:
            a, b = node.outputs.range(seg)
            out[a:b] = per_axon[key]
    return out
