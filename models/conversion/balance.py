"""Channel balancing (SmoothQuant, Xiao et al. 2023; FlatQuant learns the same per-channel scales
beside its transforms): where a per-channel scale folds exactly into the weights on both sides,
the quantised activation becomes s ⊙ x and its reader's columns are divided by s.

Two such places in a LLaMA block, both after the rotations (`rotation.prepare`):
- down_proj's input, the SwiGLU output silu(gate) ⊙ up: up_proj's rows absorb s, down_proj's
  columns 1/s (the online Hadamard then mixes s ⊙ h: down_proj absorbs H·diag(1/s)·H⁻¹).
  up_proj's weights are scaled per output row, so its rows' scales cost it nothing.
- o_proj's input, the attention output: P·V is linear per head, so v_proj's rows (and bias) of
  KV head j absorb s_j and o_proj's columns of every query head reading j absorb 1/s_j. The
  cached values are quantised per channel with a static range, which a channel scale leaves alone.

The residual stream's readers cannot be balanced this way: RMSNorm sits between them and the
writers. The scale: with a per-token scale after a Hadamard, the quantisation noise is about the
same in every channel and grows with ‖s ⊙ x‖; the reader W turns it into
‖W·diag(1/s)‖²_F · ‖s ⊙ x‖², smallest at s_j² ∝ ‖w_j‖ / rms(x_j) (Cauchy–Schwarz). So
s_j = (‖w_j‖ / rms(x_j))^α with α = `QuantSpec.balance` (0.5: that optimum; 0: off), divided by
its root mean square and kept within 1/MAX_RATIO..MAX_RATIO. A learned rotation is learned
before, without balancing; the scales are measured on the rotated model.
"""

import torch
import torch.nn.functional as F

from sdllm.models.source.llama import Llama, blockwise, hadamard

MAX_RATIO = 16.0  # a channel is scaled by at most this (or its inverse): fixed point keeps its resolution
WINDOWS = 16  # calibration windows the channels' root mean squares are measured on


@torch.no_grad()
def input_rms(model: Llama, calib_tokens) -> dict:
    """Per layer, the root mean square of every channel of down_proj's input before the online
    Hadamard ('down', (layers, ffn_dim)) and of o_proj's input ('values', (layers, n_heads·head_dim)),
    float64, over the first WINDOWS calibration windows."""
    sums = {"down": [0.0] * model.cfg.n_layers, "values": [0.0] * model.cfg.n_layers}
    count = 0

    def add(key, i, x):
        sums[key][i] = sums[key][i] + x.double().square().reshape(-1, x.shape[-1]).sum(0)

    hooks = []
    for i, layer in enumerate(model.layers):
        hooks.append(layer.mlp.register_forward_pre_hook(
            lambda m, inp, i=i: add("down", i, F.silu(m.gate_proj(inp[0])) * m.up_proj(inp[0]))))
        hooks.append(layer.attn.o_proj.register_forward_pre_hook(lambda m, inp, i=i: add("values", i, inp[0])))
    try:
        for window in calib_tokens[:WINDOWS]:
            window = torch.as_tensor(window)
            model(window[None])
            count += len(window)
    finally:
        for h in hooks:
            h.remove()
    return {key: (torch.stack(rows) / count).sqrt() for key, rows in sums.items()}


def _normalised(ratio, alpha: float):
    s = ratio.clamp_min(1e-12) ** alpha
    s = s / s.square().mean(-1, keepdim=True).sqrt()
    return s.clamp(1 / MAX_RATIO, MAX_RATIO)


@torch.no_grad()
def balance_scales(model: Llama, rms: dict, alpha: float) -> dict:
    """{'down': (layers, ffn_dim), 'values': (layers, n_kv_heads·head_dim)} float64 channel scales of
    a prepared model, from its inputs' `input_rms`."""
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    down, values = [], []
    for i, layer in enumerate(model.layers):
        w = _down_unmixed(layer.mlp.down_proj.weight.double(), c.down_hadamard)
        down.append(_normalised(w.norm(dim=0) / rms["down"][i].clamp_min(1e-12), alpha))
        # query heads reading one KV head share its scale: their column norms and inputs add up
        wo = layer.attn.o_proj.weight.double().square().sum(0).reshape(c.n_kv_heads, group, c.head_dim).sum(1)
        xo = rms["values"][i].square().reshape(c.n_kv_heads, group, c.head_dim).sum(1)
        values.append(_normalised((wo / xo.clamp_min(1e-24)).sqrt().flatten(), alpha))
    return {"down": torch.stack(down), "values": torch.stack(values)}


def _orthonormal_hadamard(block: int):
    return hadamard(block).double() / block**0.5


def _down_unmixed(w, block: int):
    """down_proj's weight as it reads the SwiGLU output before the online Hadamard (up to a constant)."""
    if not block:
        return w
    return blockwise(w, _orthonormal_hadamard(block))


@torch.no_grad()
def balance(model: Llama, scales: dict) -> Llama:
    """Fold the channel scales into the weights of a prepared model, in place: the logits stay
    those of the model given (up to float rounding)."""
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    b = c.down_hadamard
    h = _orthonormal_hadamard(b) if b else None
    for layer, s_down, s_val in zip(model.layers, torch.as_tensor(scales["down"]), torch.as_tensor(scales["values"]),
                                    strict=True):
        s_down, s_val = s_down.double(), s_val.double()
        m, a = layer.mlp, layer.attn
        m.up_proj.weight.copy_((m.up_proj.weight.double() * s_down[:, None]).to(m.up_proj.weight.dtype))
        w = m.down_proj.weight
        if b:  # W·B⁻¹·diag(1/s)·B with B the blockwise Hadamard: orthonormal and symmetric, B⁻¹ = B
            new = blockwise(_down_unmixed(w.double(), b) / s_down, h)
        else:
            new = w.double() / s_down
        w.copy_(new.to(w.dtype))
        a.v_proj.weight.copy_((a.v_proj.weight.double() * s_val[:, None]).to(a.v_proj.weight.dtype))
        if a.v_proj.bias is not None:
            a.v_proj.bias.copy_((a.v_proj.bias.double() * s_val).to(a.v_proj.bias.dtype))
        per_query_head = s_val.reshape(c.n_kv_heads, c.head_dim).repeat_interleave(group, dim=0).flatten()
        a.o_proj.weight.copy_((a.o_proj.weight.double() / per_query_head).to(a.o_proj.weight.dtype))
    return model
