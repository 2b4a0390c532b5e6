"""Neuron-unit programs: what runs between the spike-driven stages of one decoder layer.

A unit holds the layer's residual stream and the per-token scales that live next to the
neurons (post-synaptic scales); the synapse cores hold the weights and the KV cache. Each
program consumes the accumulators of one spike-driven stage and returns the integer
activations (spike counts) of the points that stage's table entry says it produces
(`sdllm.stages.LAYER`). Inputs may carry leading token axes (the integer reference runs a whole
window at once, with `pos` an array of positions); every operation is row-wise, so a batched
call equals the same tokens one at a time, bit for bit. The integer reference and the runtime's
neuron-unit cores both drive these objects, in the same order, with the same integers. The
arithmetic comes from an ops module: `kernels` by default, or `fixedpoint`, its definition.

`params` is a flat dict of numpy arrays and ints (`unit_params`), as a build stores it.
"""

import numpy as np

from sdllm import codes, stages
from sdllm.formats.build import wide_keys
from sdllm.formats.model import ModelFile
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer import kernels


def order_key(point: stages.Point) -> str:
    """The unit parameter holding a γ point's order statistic (the index of its clipping value)."""
    return f"k_{point.name}"


def qmax_key(point: stages.Point) -> str:
    """The parameter holding the Q of a point's per-token step m/Q: its integers are in [-Q, Q],
    but for a wide group's channels (`wide_keys`), which are clipped at their own Q."""
    return f"qmax_{point.name}"


def theta_key(point: stages.Point) -> str:
    """The parameter holding a spike point's dead zone θ (|q| <= θ sends nothing)."""
    return f"theta_{point.name}"


def point_keys(point: stages.Point, params: dict) -> list:
    """The parameters of a point that `params` holds: its order statistic, Q, dead zone and wide group."""
    return [key for key in (order_key(point), qmax_key(point), theta_key(point), *wide_keys(point)) if key in params]


def point_params(spec, points, layer: int | None) -> dict:
    """Each point's step's Q, dead zone and wide group in a layer (None: the head's), as unit and
    host parameters."""
    out = {}
    for p in points:
        at = spec.at(p, layer)
        out[qmax_key(p)] = at.step_max
        out[theta_key(p)] = at.theta
        if at.wide:
            out.update(zip(wide_keys(p), (at.wide, at.q_max)))
    return out


def order_statistic(point: stages.Point, cfg, at, gamma: float) -> int:
    """The index of a γ point's clipping value among the values it is taken over (a wide group's are not)."""
    return fx.quantile_index(point.width(cfg) - at.wide, gamma)


def wide_group(params: dict, point: stages.Point) -> tuple:
    """(channels, Q) of a point's wide group, (0, 0) without one."""
    channels, q = wide_keys(point)
    return (int(params[channels]), int(params[q])) if channels in params else (0, 0)


def scale_key(stage: stages.Stage) -> str:
    """The unit (or host) parameter holding a static stage's per-output-channel weight scales."""
    return f"scale_{stage.name}"


BIAS_KEY = f"bias_{stages.ENTRY_STAGE.name}"
RESID_MAX_KEY = "resid_max"


def hand_off(h, params: dict):
    """The residual as the next layer receives it (the embedding as the first layer does):
    saturated to the config's resid_bits."""
    return fx.saturate(h, int(params[RESID_MAX_KEY]))


CARRY_KEYS = ("resid_pieces", "resid_piece_bits")


def carry_params(resid_bits: int, payload_bits: int) -> dict:
    """How the target's graded spikes carry the resid_bits-bit residual (`codes.graded_pieces`):
    one spike per channel where the payload holds it, else a few pieces per channel whose upper
    ones are zero — no packet — but for the rare massive activations."""
    return dict(zip(CARRY_KEYS, codes.graded_pieces(resid_bits, payload_bits)))


def carried(h, params: dict):
    """The residual (or embedding) as graded spikes carry it: `hand_off`, then its pieces."""
    return codes.split_pieces(hand_off(h, params), *(int(params[k]) for k in CARRY_KEYS))


def received(pieces, params: dict):
    """The residual from the graded spikes that carried it (`carried`'s inverse)."""
    return codes.join_pieces(pieces, *(int(params[k]) for k in CARRY_KEYS))


def piece_bound(value_max: int, params: dict) -> int:
    """Largest |piece| `carried` sends for values up to value_max."""
    return codes.piece_max(value_max, *(int(params[k]) for k in CARRY_KEYS))


def causal(n_keys: int, pos):
    """Which of n_keys cached positions each query at `pos` (int or array) attends to: (..., 1, n_keys)."""
    return np.arange(n_keys) <= np.asarray(pos)[..., None, None]


def unit_params(model: ModelFile, layer: int) -> dict:
    """Everything a decoder-layer neuron unit needs, as numpy arrays and ints."""
    cfg, spec = model.config, model.quant
    params = {
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "eps_fx": int(model.eps_fx),
        RESID_MAX_KEY: cfg.resid_max,
        **point_params(spec, stages.LAYER_POINTS, layer),
        "down_block": cfg.down_hadamard,
        "down_shift": fx.hadamard_shift(cfg.down_hadamard) if cfg.down_hadamard else 0,
        "qk_shift": fx.hadamard_shift(cfg.head_dim) if cfg.qk_hadamard else -1,
        BIAS_KEY: model.bias_fx[layer],
        "v_range": model.v_range_fx[layer],
        "rope_cos": model.rope_cos_fx,
        "rope_sin": model.rope_sin_fx,
    }
    for p in stages.LAYER_POINTS:
        if p.gamma:
            params[order_key(p)] = order_statistic(p, cfg, spec.at(p, layer), model.gamma[p.tap(layer)])
    for s in stages.LAYER_STATIC:
        params[scale_key(s)] = model.scales_fx[s.node(layer)]
    return params


def head_params(model: ModelFile) -> dict:
    """What the LM head's side needs: the last unit's final norm and quantisation, the host's scales."""
    return {
        **point_params(model.quant, (stages.HEAD_IN,), None),
        "eps_fx": int(model.eps_fx),
        order_key(stages.HEAD_IN): order_statistic(stages.HEAD_IN, model.config, model.quant.at(stages.HEAD_IN, None),
                                                   model.gamma[stages.HEAD_IN.tap(None)]),
        scale_key(stages.HEAD): model.scales_fx[stages.HEAD.name],
    }


class DecoderLayerUnit:
    def __init__(self, params: dict, max_seq_len: int, ops=None):
        self.p = params
        # `kernels` (fused, fast); `fixedpoint` (the numpy definitions, the same integers);
        # or `float_ops.FloatNonlinearities` to measure what each integer nonlinearity costs
        self.ops = ops or kernels
        n_kv = int(params["n_kv_heads"])
        self.k_scale = np.zeros((n_kv, max_seq_len), np.int64)
        self.group = int(params["n_heads"]) // n_kv
        self.first = 0  # where the sequence being run begins in the caches (`run`)

    def run(self, stage: stages.Stage, acc, pos, first: int = 0):
        """The program that takes `stage`'s accumulators: a tuple of its produced points' integers,
        or the residual stream after the layer's last stage. pos: the position in the caches;
        first: where its sequence begins there (a batch holds several side by side), so it is at
        position pos − first of its sequence (RoPE) and attends to first .. pos."""
        self.first = first
        return getattr(self, stage.program)(stage, acc, pos)

    def Q(self, point: stages.Point) -> int:
        return int(self.p[qmax_key(point)])

    def theta(self, point: stages.Point) -> int:
        return int(self.p[theta_key(point)])

    def _quantize(self, point: stages.Point, x):
        return self.ops.quantize(x, self.p[order_key(point)], self.Q(point), self.theta(point))

    def _norm_quantize(self, point: stages.Point):
        p = self.p
        q, self.ratio = self.ops.norm_quantize(self.h, p[order_key(point)], self.Q(point), self.theta(point), p["eps_fx"],
                                               *wide_group(p, point))
        return q

    # the programs, in the order a layer runs them -----------------------------------------------
    def attention_input(self, h):
        """The residual arriving at the layer (as `hand_off` gives it) -> the first stage's spike
        counts (RMSNorm, γ-quantile)."""
        self.h = np.asarray(h, np.int64)
        return self._norm_quantize(stages.LAYER_INPUT[1][0])

    def rope_query_key_value(self, stage, acc, pos):
        """q/k/v accumulators -> (query spike counts (heads*hd,), key (kv*hd,), value (kv*hd,));
        the last two are written into the KV stages' synapses."""
        p = self.p
        query, key, value = stage.produces
        nh, nkv, hd = int(p["n_heads"]), int(p["n_kv_heads"]), int(p["head_dim"])
        y = self.ops.dequant_normed(acc, p[scale_key(stage)], self.ratio, self.Q(stage.input)) + p[BIAS_KEY]
        lead = y.shape[:-1]
        q = y[..., : nh * hd].reshape(*lead, nh, hd)
        k = y[..., nh * hd : (nh + nkv) * hd].reshape(*lead, nkv, hd)
        v = y[..., (nh + nkv) * hd :].reshape(*lead, nkv, hd)
        at = np.asarray(pos) - self.first
        cos, sin = p["rope_cos"][at][..., None, :], p["rope_sin"][at][..., None, :]
        q, k = self.ops.rope(q, cos, sin), self.ops.rope(k, cos, sin)
        if p["qk_shift"] >= 0:
            q, k = self.ops.hadamard(q, hd, int(p["qk_shift"])), self.ops.hadamard(k, hd, int(p["qk_shift"]))
        q_int, self.q_scale = self._quantize(query, q)
        k_int, k_scale = self.ops.quantize(k, hd - 1, self.Q(key), 0)
        self.k_scale[:, pos] = np.moveaxis(k_scale, -1, 0)
        v_int = self.ops.quantize_static(v, p["v_range"], self.Q(value))
        return q_int.reshape(*lead, -1), k_int.reshape(*lead, -1), v_int.reshape(*lead, -1)

    def softmax(self, stage, acc, pos):
        """Q·Kᵀ accumulators (heads, max_seq_len) -> P·V spike counts (heads, max_seq_len), zero past pos."""
        acc = np.asarray(acc, np.int64)  # (..., heads, keys): keys may stop after the last position attended
        n_keys, f = acc.shape[-1], self.first  # the sequence's own keys: from first on
        k_scale = np.repeat(self.k_scale[:, f:n_keys], self.group, axis=0)
        scores = self.ops.score_values(acc[..., f:], self.q_scale, k_scale, self.Q(stage.input), self.Q(stage.cache))
        (out,) = stage.produces
        probs, self.p_top, self.p_total = self.ops.softmax_quantize(scores, self.Q(out), self.theta(out),
                                                                    causal(n_keys - f, np.asarray(pos) - f))
        if f:
            probs = np.concatenate([np.zeros((*probs.shape[:-1], f), probs.dtype), probs], axis=-1)
        return (probs,)

    def attention_output(self, stage, acc, pos):
        """P·V accumulators -> the attention output's spike counts."""
        p = self.p
        acc = np.asarray(acc)
        acc = acc.reshape(*acc.shape[:-1], int(p["n_heads"]), -1)
        v_range = np.repeat(p["v_range"], self.group, axis=0)
        attn = self.ops.attention_output(acc, v_range, self.p_top, self.p_total, self.Q(stage.input), self.Q(stage.cache))
        (out,) = stage.produces
        q, self.m_in = self._quantize(out, attn.reshape(*attn.shape[:-2], -1))
        return (q,)

    def add_attention(self, stage, acc, pos):
        """Output-projection accumulators -> residual += attention; RMSNorm'd MLP input's spike counts."""
        self.h = self.h + self.ops.dequant(acc, self.p[scale_key(stage)], self.m_in, self.Q(stage.input))
        (out,) = stage.produces
        return (self._norm_quantize(out),)

    def swiglu(self, stage, acc, pos):
        """gate/up accumulators -> SiLU(gate)·up, online Hadamard, spike counts of the down input."""
        p = self.p
        y = self.ops.dequant_normed(acc, p[scale_key(stage)], self.ratio, self.Q(stage.input))
        ffn = y.shape[-1] // 2
        x = self.ops.silu_mul(y[..., :ffn], y[..., ffn:])
        if p["down_block"]:
            x = self.ops.hadamard(x, int(p["down_block"]), int(p["down_shift"]))
        (out,) = stage.produces
        q, self.m_in = self._quantize(out, x)
        return (q,)

    def add_mlp(self, stage, acc, pos):
        """down accumulators -> the layer's residual output (FRAC; `hand_off` passes it on)."""
        self.h = self.h + self.ops.dequant(acc, self.p[scale_key(stage)], self.m_in, self.Q(stage.input))
        return self.h


def head_in(h, params: dict, ops=None):
    """Final RMSNorm + quantisation: returns (spike counts for the LM head, ratio)."""
    ops = ops or kernels
    point = stages.HEAD_IN
    return ops.norm_quantize(h, params[order_key(point)], params[qmax_key(point)], params[theta_key(point)], params["eps_fx"],
                             *wide_group(params, point))


def logits_out(acc, ratio, params: dict, ops=None):
    """LM-head accumulators -> logits (FRAC): the host boundary."""
    return (ops or kernels).dequant_normed(acc, params[scale_key(stages.HEAD)], ratio, params[qmax_key(stages.HEAD.input)])
