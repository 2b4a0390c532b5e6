"""Float stand-ins for the integer-only nonlinearities, to measure what each one costs.

`FloatNonlinearities({"rmsnorm", "softmax"})` behaves like the `fixedpoint` module except that
the named operations compute in float64 from the same integer inputs and round once to the
same output format. An integer reference built with it (`IntegerSDLLM(model, ops=..., rope=...)`)
differs from the real one only in those operations, so the perplexity difference is the cost
of their fixed-point versions. RoPE's float version uses exact angles (`rope_tables`), not
the TRIG_FRAC tables.
"""

import numpy as np

from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer import kernels
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.llama import rope_tables

NONLINEARITIES = ("rmsnorm", "softmax", "silu", "rope")


def _round(x):
    return np.round(x).astype(np.int64)


def norm_quantize(x, k: int, q_max: int, theta: int, eps_fx: int, wide: int = 0, wide_max: int = 0):
    q, m = fx.quantize(x, k, q_max, theta, wide, wide_max)
    xf = np.asarray(x, np.float64)
    rms = np.sqrt((xf * xf).mean(-1) + eps_fx)
    return q, _round(m * float(1 << fx.RATIO_FRAC) / rms)


def softmax_quantize(scores, q_max: int, theta: int, valid=None):
    s = np.asarray(scores, np.float64) / (1 << fx.FRAC)
    valid = np.ones(s.shape, bool) if valid is None else np.broadcast_to(valid, s.shape)
    top_score = np.where(valid, s, -np.inf).max(-1, keepdims=True)
    e = np.where(valid, np.exp(np.where(valid, s - top_score, 0.0)), 0.0) * (1 << fx.EXP_FRAC)
    p = np.clip(_round(e * q_max / e.max(-1, keepdims=True)), 0, q_max)
    p[p <= theta] = 0
    return p, _round(e.max(-1)), np.maximum(_round(e.sum(-1)), 1)


def silu_mul(gate, up):
    g = np.asarray(gate, np.float64) / (1 << fx.FRAC)
    return _round(g / (1.0 + np.exp(-g)) * np.asarray(up, np.float64))


def rope(x, cos, sin):
    """cos/sin: float tables (exact angles) in place of the TRIG_FRAC ones."""
    xf = np.asarray(x, np.float64)
    half = xf.shape[-1] // 2
    x1, x2 = xf[..., :half], xf[..., half:]
    return _round(np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1))


def float_reference(model, names) -> IntegerSDLLM:
    """The integer reference with the named nonlinearities in float (RoPE: exact angles)."""
    rope = None
    if "rope" in names:
        cos, sin = rope_tables(model.config, model.config.max_seq_len)
        rope = (cos.numpy(), sin.numpy())
    return IntegerSDLLM(model, ops=FloatNonlinearities(names), rope=rope)


class FloatNonlinearities:
    """An ops module for `DecoderLayerUnit`: the named nonlinearities in float, the rest `kernels`'."""

    def __init__(self, names):
        unknown = set(names) - set(NONLINEARITIES)
        if unknown:
            raise ValueError(f"float nonlinearities: unknown {sorted(unknown)} (known: {', '.join(NONLINEARITIES)})")
        self.names = frozenset(names)
        self.norm_quantize = norm_quantize if "rmsnorm" in names else fx.norm_quantize
        self.softmax_quantize = softmax_quantize if "softmax" in names else fx.softmax_quantize
        self.silu_mul = silu_mul if "silu" in names else fx.silu_mul
        self.rope = rope if "rope" in names else fx.rope

    def __getattr__(self, name):
        return getattr(kernels, name)
