"""Neuron-unit programs: what runs between the spike-driven stages of one decoder layer.

A unit holds the layer's residual stream and the per-token scales that live next to the
neurons (post-synaptic scales); the synapse cores hold the weights and the KV cache.
Each method consumes the accumulators of one spike-driven stage and returns the integer
activations (spike counts) of the next. Inputs may carry leading token axes (the integer
reference runs a whole window at once, with `pos` an array of positions); every operation is
row-wise, so a batched call equals the same tokens one at a time, bit for bit. The integer reference and the runtime's neuron-unit
cores both drive these objects, in the same order, with the same integers.

`params` is a flat dict of numpy arrays and ints (see `sdllm.models.sdllm.unit_params`).
"""

import numpy as np

from sdllm.models import fixedpoint as fx


def causal(n_keys: int, pos):
    """Which of n_keys cached positions each query at `pos` (int or array) attends to: (..., 1, n_keys)."""
    return np.arange(n_keys) <= np.asarray(pos)[..., None, None]


class DecoderLayerUnit:
    def __init__(self, params: dict, max_seq_len: int, ops=fx):
        self.p = params
        self.ops = ops  # `fixedpoint`, or `float_ops.FloatNonlinearities` to measure what it costs
        n_kv = int(params["n_kv_heads"])
        self.k_scale = np.zeros((n_kv, max_seq_len), np.int64)
        self.group = int(params["n_heads"]) // n_kv

    # stage inputs ---------------------------------------------------------------
    def attn_in(self, h):
        p = self.p
        self.h = np.asarray(h, np.int64)
        q, self.ratio = self.ops.norm_quantize(self.h, p["k_qkv"], p["q_max"], p["theta"], p["eps_fx"])
        return q

    def after_qkv(self, acc, pos):
        """Returns (query spikes (heads*hd,), key (kv*hd,), value (kv*hd,)) — the last two are cache writes."""
        p = self.p
        nh, nkv, hd = int(p["n_heads"]), int(p["n_kv_heads"]), int(p["head_dim"])
        y = fx.dequant_normed(acc, p["scale_qkv"], self.ratio, p["q_max"]) + p["bias_qkv"]
        lead = y.shape[:-1]
        q = y[..., : nh * hd].reshape(*lead, nh, hd)
        k = y[..., nh * hd : (nh + nkv) * hd].reshape(*lead, nkv, hd)
        v = y[..., (nh + nkv) * hd :].reshape(*lead, nkv, hd)
        cos, sin = p["rope_cos"][pos][..., None, :], p["rope_sin"][pos][..., None, :]
        q, k = self.ops.rope(q, cos, sin), self.ops.rope(k, cos, sin)
        if p["qk_shift"] >= 0:
            q, k = fx.hadamard(q, hd, int(p["qk_shift"])), fx.hadamard(k, hd, int(p["qk_shift"]))
        q_int, self.q_scale = fx.quantize(q, p["k_q"], p["q_max"], p["theta"])
        k_int, k_scale = fx.quantize(k, hd - 1, p["kv_max"], 0)
        self.k_scale[:, pos] = np.moveaxis(k_scale, -1, 0)
        v_int = fx.quantize_static(v, p["v_range"], p["kv_max"])
        return q_int.reshape(*lead, -1), k_int.reshape(*lead, -1), v_int.reshape(*lead, -1)

    def after_qk(self, acc, pos):
        """acc (heads, max_seq_len) -> P·V spike counts (heads, max_seq_len), zero past pos."""
        p = self.p
        acc = np.asarray(acc, np.int64)
        k_scale = np.repeat(self.k_scale, self.group, axis=0)
        scores = fx.score_values(acc, self.q_scale, k_scale, p["q_max"], p["kv_max"])
        probs, self.p_top, self.p_total = self.ops.softmax_quantize(scores, p["q_max"], p["theta"], causal(acc.shape[-1], pos))
        return probs

    def after_pv(self, acc):
        p = self.p
        acc = np.asarray(acc)
        acc = acc.reshape(*acc.shape[:-1], int(p["n_heads"]), -1)
        v_range = np.repeat(p["v_range"], self.group, axis=0)
        attn = fx.attention_output(acc, v_range, self.p_top, self.p_total, p["q_max"], p["kv_max"])
        q, self.m_o = fx.quantize(attn.reshape(*attn.shape[:-2], -1), p["k_o"], p["q_max"], p["theta"])
        return q

    def after_o(self, acc):
        p = self.p
        self.h = self.h + fx.dequant(acc, p["scale_o"], self.m_o, p["q_max"])
        q, self.ratio = self.ops.norm_quantize(self.h, p["k_gate_up"], p["q_max"], p["theta"], p["eps_fx"])
        return q

    def after_gate_up(self, acc):
        p = self.p
        y = fx.dequant_normed(acc, p["scale_gate_up"], self.ratio, p["q_max"])
        ffn = y.shape[-1] // 2
        x = self.ops.silu_mul(y[..., :ffn], y[..., ffn:])
        if p["down_block"]:
            x = fx.hadamard(x, int(p["down_block"]), int(p["down_shift"]))
        q, self.m_down = fx.quantize(x, p["k_down"], p["q_max"], p["theta"])
        return q

    def after_down(self, acc):
        """Returns the layer's residual output (FRAC)."""
        self.h = self.h + fx.dequant(acc, self.p["scale_down"], self.m_down, self.p["q_max"])
        return self.h


def head_in(h, params: dict, ops=fx):
    """Final RMSNorm + quantisation: returns (spike counts for the LM head, ratio)."""
    return ops.norm_quantize(h, params["k_head"], params["q_max"], params["theta"], params["eps_fx"])


def logits_out(acc, ratio, params: dict):
    """LM-head accumulators -> logits (FRAC): the host boundary."""
    return fx.dequant_normed(acc, params["scale_head"], ratio, params["q_max"])
