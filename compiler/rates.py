"""Spike rates of the neuron units' outputs, measured by running the integer reference on
calibration text: the traffic weights of placement. A spike output's rate is its mean |q|
(spikes per token); graded values (partial sums, keys, values, residuals) count one packet
per value per token. Without a measurement every routed value counts one packet per token
(the fan-out fallback)."""

import numpy as np

from sdllm.models.corpus import calibration_windows
from sdllm.models.integer_ref import IntegerSDLLM

SPIKE_SEGMENTS = ("qkv", "qk", "pv", "o", "gate_up", "down", "head")


def measure(blob: dict, n_tokens: int = 128) -> dict:
    """stage name ('L3.gate_up', 'head') -> mean spikes per token on each of its input axons."""
    n = min(n_tokens, blob["config"]["max_seq_len"])
    tokens = calibration_windows(blob["tokenizer"], n, 1)[0]
    _, spikes = IntegerSDLLM(blob).forward(tokens)
    return {name: np.abs(np.asarray(q)).reshape(n, -1).mean(0) for name, q in spikes.items()}


def output_rates(net, node) -> np.ndarray:
    """Packets per token on each of a node's outputs."""
    out = np.ones(node.outputs.total)
    rates = getattr(net, "rates", None) or {}
    for seg in node.outputs.sizes:
        key = "head" if seg == "head" else f"L{node.layer}.{seg}"
        if node.kind == "unit" and seg in SPIKE_SEGMENTS and key in rates:
            a, b = node.outputs.range(seg)
            out[a:b] = rates[key]
    return out
