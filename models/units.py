"""Neuron-unit programs: what runs between the spike-driven stages of one decoder layer.

A unit holds the layer's residual stream and the per-token scales that live next to the
neurons (post-synaptic scales); the synapse cores hold the weights and the KV cache.
Each method consumes the accumulators of one spike-driven stage and returns the integer
activations (spike counts) of the next. The integer reference and the runtime's neuron-unit
cores both drive these objects, in the same order, with the same integers.

`params` is a flat dict of numpy arrays and ints (see `sdllm.models.sdllm.unit_params`).
"""

import numpy as np

from sdllm.models import fixedpoint as fx


class DecoderLayerUnit:
    def __init__(self, params: dict, max_seq_len: int):
        self.p = params
        n_kv = int(params["n_kv_heads"])
        self.k_scale = np.zeros((n_kv, max_seq_len), np.int64)
        self.group = int(params["n_heads"]) // n_kv

    # stage inputs ---------------------------------------------------------------
    def attn_in(self, h):
        p = self.p
        self.h = np.asarray(h, np.int64)
        q, self.ratio = fx.norm_quantize(self.h, p["k_qkv"], p["q_max"], p["theta"], p["eps_fx"])
        return q

    def after_qkv(self, acc, pos: int):
        """Returns (query spikes (heads*hd,), key (kv*hd,), value (kv*hd,)) — the last two are cache writes."""
        p = self.p
        nh, nkv, hd = int(p["n_heads"]), int(p["n_kv_heads"]), int(p["head_dim"])
        y = fx.dequant_normed(acc, p["scale_qkv"], self.ratio, p["q_max"])
        q = y[: nh * hd].reshape(nh, hd)
        k = y[nh * hd : (nh + nkv) * hd].reshape(nkv, hd)
        v = y[(nh + nkv) * hd :].reshape(nkv, hd)
        q = fx.rope(q, p["rope_cos"][pos], p["rope_sin"][pos])
        k = fx.rope(k, p["rope_cos"][pos], p["rope_sin"][pos])
        q_int, self.q_scale = fx.quantize(q, p["k_q"], p["q_max"], p["theta"])
        k_int, self.k_scale[:, pos] = fx.quantize(k, hd - 1, p["kv_max"], 0)
        v_int = fx.quantize_static(v, p["v_range"], p["kv_max"])
        return q_int.reshape(-1), k_int.reshape(-1), v_int.reshape(-1)

    def after_qk(self, acc, pos: int):
        """acc (heads, max_seq_len) -> P·V spike counts (heads, max_seq_len), zero past pos."""
        p = self.p
        n = pos + 1
        k_scale = np.repeat(self.k_scale[:, :n], self.group, axis=0)
        scores = fx.score_values(np.asarray(acc)[:, :n], self.q_scale, k_scale, p["q_max"], p["kv_max"])
        probs, self.p_top, self.p_total = fx.softmax_quantize(scores, p["q_max"], p["theta"])
        out = np.zeros_like(np.asarray(acc, np.int64))
        out[:, :n] = probs
        return out

    def after_pv(self, acc):
        p = self.p
        acc = np.asarray(acc).reshape(int(p["n_heads"]), -1)
        v_range = np.repeat(p["v_range"], self.group, axis=0)
        attn = fx.attention_output(acc, v_range, self.p_top, self.p_total, p["q_max"], p["kv_max"])
        q, self.m_o = fx.quantize(attn.reshape(-1), p["k_o"], p["q_max"], p["theta"])
        return q

    def after_o(self, acc):
        p = self.p
        self.h = self.h + fx.dequant(acc, p["scale_o"], self.m_o, p["q_max"])
        q, self.ratio = fx.norm_quantize(self.h, p["k_gate_up"], p["q_max"], p["theta"], p["eps_fx"])
        return q

    def after_gate_up(self, acc):
        p = self.p
        y = fx.dequant_normed(acc, p["scale_gate_up"], self.ratio, p["q_max"])
        ffn = y.shape[-1] // 2
        q, self.m_down = fx.quantize(fx.silu_mul(y[:ffn], y[ffn:]), p["k_down"], p["q_max"], p["theta"])
        return q

    def after_down(self, acc):
        """Returns the layer's residual output (FRAC)."""
        self.h = self.h + fx.dequant(acc, self.p["scale_down"], self.m_down, self.p["q_max"])
        return self.h


def head_in(h, params: dict):
    """Final RMSNorm + quantisation: returns (spike counts for the LM head, ratio)."""
    return fx.norm_quantize(h, params["k_head"], params["q_max"], params["theta"], params["eps_fx"])


def logits_out(acc, ratio, params: dict):
    """LM-head accumulators -> logits (FRAC): the host boundary."""
    return fx.dequant_normed(acc, params["scale_head"], ratio, params["q_max"])
