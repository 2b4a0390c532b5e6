"""Float LLaMA -> SDLLM: γ-SQP step 1 (γ-quantile per-token scales, calibrated on text),
per-output-channel symmetric integer weights, and the fake-quant float forward.

Step 2 (integer -> bidirectional ternary spike train, T = 2**(b-1) - 1 timesteps) is what the
compiled network does with the integers this module fixes; see `sdllm.models.spikes`.

The SDLLM (model.pt) is a plain dict; its quantisation points, in forward order per layer:
  L{i}.qkv      RMSNorm'd residual, γ-quantile per token        -> q/k/v projections
  L{i}.q        query after RoPE, γ-quantile per (token, head)  -> Q·Kᵀ against cached keys
  L{i}.k        key after RoPE, max per (token, kv head)        -> written as synapses (kv bits)
  L{i}.v        value, static per-channel range                 -> written as synapses (kv bits)
  L{i}.p        softmax, max per (token, head), unsigned        -> P·V against cached values
  L{i}.o        attention output, γ-quantile per token          -> o projection
  L{i}.gate_up  RMSNorm'd residual, γ-quantile per token        -> gate/up projections
  L{i}.down     SiLU(gate)·up, γ-quantile per token             -> down projection
  head          final RMSNorm'd residual, γ-quantile per token  -> LM head
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sdllm.errors import SdllmError
from sdllm.models import checkpoint
from sdllm.models import fixedpoint as fx
from sdllm.models.llama import Llama, LlamaConfig

GAMMA_GRID = (1.0, 0.9995, 0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.9, 0.85, 0.8)
GAMMA_POINTS = ("qkv", "q", "o", "gate_up", "down")


@dataclass(frozen=True)
class QuantSpec:
    weight_bits: int = 4
    act_bits: int = 4
    kv_bits: int = 8
    theta: int = 0

    @property
    def timesteps(self) -> int:
        """Bidirectional ternary code: T = Q = 2**(b-1) - 1 steps for a b-bit activation."""
        return fx.qmax(self.act_bits)


def _gamma_error(x, k: int, q_max: int, theta: int, weight=None) -> float:
    m = torch.kthvalue(x.abs(), k + 1, dim=-1).values.clamp_min(1e-12).unsqueeze(-1)
    q = torch.clamp(torch.round(x * q_max / m), -q_max, q_max)
    q = torch.where(q.abs() <= theta, torch.zeros_like(q), q)
    err = (x - q * m / q_max) ** 2
    if weight is not None:
        err = err * weight
    return err.sum().item()


def calibrate_gamma(x, q_max: int, theta: int, weight=None) -> float:
    """The γ in GAMMA_GRID with least (channel-weighted) quantisation error on rows of x."""
    n = x.shape[-1]
    errors = [_gamma_error(x, fx.quantile_index(n, g), q_max, theta, weight) for g in GAMMA_GRID]
    return GAMMA_GRID[int(np.argmin(errors))]


@torch.no_grad()
def record_activations(model: Llama, tokens) -> dict:
    """Every tap point's float activation: (rows, n), or (rows, heads, n) for per-head points."""
    acts = {}

    def tap(name, x):
        y = x.detach()
        y = y.transpose(1, 2).reshape(-1, y.shape[1], y.shape[-1]) if y.dim() == 4 else y.reshape(-1, y.shape[-1])
        acts.setdefault(name, []).append(y)
        return x

    for window in tokens:
        model(window[None], tap=tap)
    return {k: torch.cat(v) for k, v in acts.items()}


def quantize_weight(w, bits: int):
    """Per-output-channel symmetric round-to-nearest: (int8 weights, SCALE_FRAC scales)."""
    q_max = fx.qmax(bits)
    scale = w.abs().amax(dim=1).clamp_min(1e-8) / q_max
    w_int = torch.clamp(torch.round(w / scale[:, None]), -q_max, q_max).to(torch.int8)
    return w_int, torch.from_numpy(fx.to_fixed(scale.double().numpy(), fx.SCALE_FRAC))


def folded_weights(model: Llama) -> dict:
    """The float matrices of every static spike-driven stage, RMSNorm gains (and 1/sqrt(d_head)) folded in."""
    out = {}
    hd = model.cfg.head_dim
    for i, layer in enumerate(model.layers):
        a, m = layer.attn, layer.mlp
        g_attn, g_mlp = layer.attn_norm.weight.detach(), layer.mlp_norm.weight.detach()
        qkv = torch.cat([a.q_proj.weight / math.sqrt(hd), a.k_proj.weight, a.v_proj.weight])
        out[f"L{i}.qkv"] = qkv.detach().double() * g_attn.double()
        out[f"L{i}.o"] = a.o_proj.weight.detach().double()
        out[f"L{i}.gate_up"] = torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach().double() * g_mlp.double()
        out[f"L{i}.down"] = m.down_proj.weight.detach().double()
    out["head"] = model.lm_head.weight.detach().double() * model.norm.weight.detach().double()
    return out


def convert(model: Llama, spec: QuantSpec, calib_tokens) -> dict:
    """Float model + calibration text -> the SDLLM as a plain dict (what model.pt holds)."""
    cfg = model.cfg
    if cfg.dim % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise SdllmError(f"model config: dim {cfg.dim} must divide by n_heads {cfg.n_heads}, "
                         f"and n_heads by n_kv_heads {cfg.n_kv_heads}")
    model = model.eval()
    acts = record_activations(model, calib_tokens)
    q_max = fx.qmax(spec.act_bits)
    gammas = {}
    for i, layer in enumerate(model.layers):
        gains = {"qkv": layer.attn_norm.weight, "gate_up": layer.mlp_norm.weight}
        for point in GAMMA_POINTS:
            w = gains.get(point)
            x = acts[f"L{i}.{point}"]
            gammas[f"L{i}.{point}"] = calibrate_gamma(
                x.reshape(-1, x.shape[-1]), q_max, spec.theta, None if w is None else w.detach() ** 2
            )
    gammas["head"] = calibrate_gamma(acts["head"], q_max, spec.theta, model.norm.weight.detach() ** 2)

    weights = {}
    for name, w in folded_weights(model).items():
        w_int, scale_fx = quantize_weight(w, spec.weight_bits)
        weights[name] = {"weight": w_int, "scale_fx": scale_fx}

    cos, sin = model.rope_cos.double().numpy(), model.rope_sin.double().numpy()
    layers = []
    for i in range(cfg.n_layers):
        v_range = acts[f"L{i}.v"].abs().amax(dim=0).double().numpy()  # (n_kv_heads, head_dim)
        entry = {f"{k}.{part}": weights[f"L{i}.{k}"][part] for k in ("qkv", "o", "gate_up", "down") for part in ("weight", "scale_fx")}
        entry["v_range_fx"] = torch.from_numpy(np.maximum(fx.to_fixed(v_range), 1))
        entry["gamma"] = {p: gammas[f"L{i}.{p}"] for p in GAMMA_POINTS}
        layers.append(entry)
    return {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "quant": asdict(spec),
        "tokenizer": {"type": "bytes"},
        "embed_fx": torch.from_numpy(fx.to_fixed(model.embed.weight.detach().double().numpy())),
        "rope_cos_fx": torch.from_numpy(fx.to_fixed(cos, fx.TRIG_FRAC)),
        "rope_sin_fx": torch.from_numpy(fx.to_fixed(sin, fx.TRIG_FRAC)),
        "eps_fx": int(round(cfg.norm_eps * (1 << (2 * fx.FRAC)))),
        "layers": layers,
        "head": {"weight": weights["head"]["weight"], "scale_fx": weights["head"]["scale_fx"], "gamma": gammas["head"]},
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


def stage_weights(blob: dict) -> dict:
    """name -> int weight matrix (out, in) of every static spike-driven stage, in forward order."""
    out = {}
    for i, entry in enumerate(blob["layers"]):
        for k in ("qkv", "o", "gate_up", "down"):
            out[f"L{i}.{k}"] = entry[f"{k}.weight"].numpy().astype(np.int64)
    out["head"] = blob["head"]["weight"].numpy().astype(np.int64)
    return out
