"""Float LLaMA -> SDLLM: γ-SQP step 1 (the rotation of `sdllm.models.rotation`, then γ-quantile
per-token scales calibrated on text) and per-output-channel symmetric integer weights (GPTQ or
round-to-nearest, `sdllm.models.gptq`).

Step 2 (integer -> bidirectional ternary spike train, T = 2**(b-1) - 1 timesteps) is what the
compiled network does with the integers this module fixes; other codes are compared in
`sdllm.models.encodings`.

The SDLLM (model.pt) is a plain dict; its quantisation points, in forward order per layer:
  L{i}.qkv      RMSNorm'd residual, γ-quantile per token        -> q/k/v projections
  L{i}.q        query after RoPE, γ-quantile per (token, head)  -> Q·Kᵀ against cached keys
  L{i}.k        key after RoPE, max per (token, kv head)        -> written as synapses (kv bits)
  L{i}.v        value, static per-channel range                 -> written as synapses (kv bits)
  L{i}.p        softmax, max per (token, head), unsigned        -> P·V against cached values
  L{i}.o        attention output, γ-quantile per token          -> o projection
  L{i}.gate_up  RMSNorm'd residual, γ-quantile per token        -> gate/up projections
  L{i}.down     SiLU(gate)·up (online Hadamard'd), γ-quantile per token -> down projection
  head          final RMSNorm'd residual, γ-quantile per token  -> LM head
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sdllm.errors import SdllmError
from sdllm.models import checkpoint, gptq
from sdllm.models import fixedpoint as fx
from sdllm.models.calibration import CalibrationStats
from sdllm.models.llama import Llama, LlamaConfig, hadamard_shift, rope_tables
from sdllm.models.rotation import prepare

STATIC_STAGES = ("qkv", "o", "gate_up", "down")
LAYER_GAMMA_POINTS = ("qkv", "q", "o", "gate_up", "down")


@dataclass(frozen=True)
class QuantSpec:
    weight_bits: int = 4
    act_bits: int = 4
    kv_bits: int = 8
    theta: int = 0
    rotate: bool = True  # randomised Hadamard on the residual stream + online Hadamard before down_proj
    gptq: bool = True  # GPTQ weights (else round-to-nearest with max scaling)
    calibrate_gamma: bool = True  # γ per quantisation point from GAMMA_GRID (else γ = 1: max scaling)
    seed: int = 0  # of the random rotation

    @property
    def timesteps(self) -> int:
        """Bidirectional ternary code: T = Q = 2**(b-1) - 1 steps for a b-bit activation."""
        return fx.qmax(self.act_bits)


def stage_matrices(model: Llama):
    """(name, float64 matrix) of every static spike-driven stage of a prepared (gain-folded)
    model, 1/sqrt(d_head) folded into the queries — one at a time, so they never all sit in memory."""
    hd = model.cfg.head_dim
    for i, layer in enumerate(model.layers):
        a, m = layer.attn, layer.mlp
        yield f"L{i}.qkv", torch.cat([a.q_proj.weight / math.sqrt(hd), a.k_proj.weight, a.v_proj.weight]).detach().double()
        yield f"L{i}.o", a.o_proj.weight.detach().double()
        yield f"L{i}.gate_up", torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach().double()
        yield f"L{i}.down", m.down_proj.weight.detach().double()
    yield "head", model.lm_head.weight.detach().double()


def qkv_bias(model: Llama, layer: int):
    a = model.layers[layer].attn
    if a.q_proj.bias is None:
        return torch.zeros(a.q_proj.out_features + 2 * a.k_proj.out_features, dtype=torch.float64)
    return torch.cat([a.q_proj.bias / math.sqrt(model.cfg.head_dim), a.k_proj.bias, a.v_proj.bias]).detach().double()


def quantize_weight(w, bits: int, hessian=None):
    """Per-output-channel symmetric integer weights: GPTQ given the input Hessian, else
    round-to-nearest with max scaling. Returns (int8 weights, SCALE_FRAC scales)."""
    w_int, scale = gptq.rtn(w, bits) if hessian is None else gptq.gptq(w, hessian, bits)
    return w_int, torch.from_numpy(fx.to_fixed(scale.double().numpy(), fx.SCALE_FRAC))


def convert(model: Llama, spec: QuantSpec, calib_tokens, progress: bool = False) -> dict:
    """Float model + calibration text -> the SDLLM as a plain dict (what model.pt holds)."""
    from tqdm import tqdm

    cfg = model.cfg
    if cfg.dim % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise SdllmError(f"model config: dim {cfg.dim} must divide by n_heads {cfg.n_heads}, "
                         f"and n_heads by n_kv_heads {cfg.n_kv_heads}")
    prepared = prepare(model.eval(), spec.rotate, spec.seed)
    cfg = prepared.cfg
    # an input channel's quantisation error costs the squared column norm of the weights reading it
    channel_weight = {name: (w**2).sum(0).float() for name, w in stage_matrices(prepared)}
    stats = CalibrationStats(fx.qmax(spec.act_bits), spec.theta, channel_weight, spec.calibrate_gamma, spec.gptq)
    stats.run(prepared, tqdm(calib_tokens, desc="calibration", disable=not progress, leave=False))

    quantized = {}
    for name, w in tqdm(stage_matrices(prepared), total=4 * cfg.n_layers + 1, desc="GPTQ" if spec.gptq else "RTN",
                        disable=not progress, leave=False):
        quantized[name] = quantize_weight(w, spec.weight_bits, stats.hessian(name) if spec.gptq else None)
    layers = []
    for i in range(cfg.n_layers):
        entry = {}
        for k in STATIC_STAGES:
            entry[f"{k}.weight"], entry[f"{k}.scale_fx"] = quantized[f"L{i}.{k}"]
        entry["qkv.bias_fx"] = torch.from_numpy(fx.to_fixed(qkv_bias(prepared, i).numpy()))
        entry["v_range_fx"] = torch.from_numpy(np.maximum(fx.to_fixed(stats.v_range[f"L{i}.v"].numpy()), 1))
        entry["gamma"] = {p: stats.gamma(f"L{i}.{p}") for p in LAYER_GAMMA_POINTS}
        layers.append(entry)

    cos, sin = rope_tables(cfg, cfg.max_seq_len)
    return {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "quant": asdict(spec),
        "tokenizer": {"type": "bytes"},
        "embed_fx": torch.from_numpy(fx.to_fixed(prepared.embed.weight.detach().double().numpy())),
        "rope_cos_fx": torch.from_numpy(fx.to_fixed(cos.numpy(), fx.TRIG_FRAC)),
        "rope_sin_fx": torch.from_numpy(fx.to_fixed(sin.numpy(), fx.TRIG_FRAC)),
        "eps_fx": int(round(cfg.norm_eps * (1 << (2 * fx.FRAC)))),
        "layers": layers,
        "head": {"weight": quantized["head"][0], "scale_fx": quantized["head"][1], "gamma": stats.gamma("head")},
    }


def config_of(blob: dict) -> LlamaConfig:
    return LlamaConfig(**blob["config"])


def spec_of(blob: dict) -> QuantSpec:
    return QuantSpec(**blob["quant"])


def unit_params(blob: dict, layer: int) -> dict:
    """Everything a decoder-layer neuron unit needs, as numpy arrays and ints."""
    cfg, spec = config_of(blob), spec_of(blob)
    entry = blob["layers"][layer]
    dim, hd, ffn = cfg.dim, cfg.head_dim, cfg.ffn_dim
    g = entry["gamma"]
    return {
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": hd,
        "q_max": fx.qmax(spec.act_bits),
        "kv_max": fx.qmax(spec.kv_bits),
        "theta": spec.theta,
        "eps_fx": int(blob["eps_fx"]),
        "k_qkv": fx.quantile_index(dim, g["qkv"]),
        "k_q": fx.quantile_index(hd, g["q"]),
        "k_o": fx.quantile_index(cfg.n_heads * hd, g["o"]),
        "k_gate_up": fx.quantile_index(dim, g["gate_up"]),
        "k_down": fx.quantile_index(ffn, g["down"]),
        "scale_qkv": entry["qkv.scale_fx"].numpy(),
        "scale_o": entry["o.scale_fx"].numpy(),
        "scale_gate_up": entry["gate_up.scale_fx"].numpy(),
        "scale_down": entry["down.scale_fx"].numpy(),
        "bias_qkv": entry["qkv.bias_fx"].numpy(),
        "down_block": cfg.down_hadamard,
        "down_shift": hadamard_shift(cfg.down_hadamard) if cfg.down_hadamard else 0,
        "qk_shift": hadamard_shift(hd) if cfg.qk_hadamard else -1,
        "v_range": entry["v_range_fx"].numpy(),
        "rope_cos": blob["rope_cos_fx"].numpy(),
        "rope_sin": blob["rope_sin_fx"].numpy(),
    }


def head_params(blob: dict) -> dict:
    cfg, spec = config_of(blob), spec_of(blob)
    return {
        "q_max": fx.qmax(spec.act_bits),
        "theta": spec.theta,
        "eps_fx": int(blob["eps_fx"]),
        "k_head": fx.quantile_index(cfg.dim, blob["head"]["gamma"]),
        "scale_head": blob["head"]["scale_fx"].numpy(),
    }


def stage_shapes(blob: dict) -> dict:
    """name -> (n_out, n_in) of every static spike-driven stage, in forward order."""
    cfg = config_of(blob)
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    layer = {"qkv": (qkv, cfg.dim), "o": (cfg.dim, cfg.n_heads * cfg.head_dim),
             "gate_up": (2 * cfg.ffn_dim, cfg.dim), "down": (cfg.dim, cfg.ffn_dim)}
    out = {f"L{i}.{k}": layer[k] for i in range(cfg.n_layers) for k in STATIC_STAGES}
    out["head"] = (cfg.vocab_size, cfg.dim)
    return out


def stage_weight(blob: dict, name: str) -> np.ndarray:
    """One static stage's integer weights (n_out, n_in), int8: read from the model, or drawn
    for a synthetic one (`sdllm.models.synthetic`)."""
    if "synthetic" in blob:
        from sdllm.models.synthetic import synthetic_weight

        shapes = stage_shapes(blob)
        return synthetic_weight(blob, list(shapes).index(name), shapes[name])
    if name == "head":
        return blob["head"]["weight"].numpy()
    layer, k = name.split(".")
    return blob["layers"][int(layer[1:])][f"{k}.weight"].numpy()


def stage_weights(blob: dict) -> dict:
    """name -> int64 weight matrix (out, in) of every static spike-driven stage, in forward order."""
    return {name: stage_weight(blob, name).astype(np.int64) for name in stage_shapes(blob)}
