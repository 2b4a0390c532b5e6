"""The fake-quant float forward of an SDLLM: float arithmetic, the SDLLM's quantisation points.

The float model is prepared as the conversion prepared it (gains folded, rotated); its
weights are replaced by the SDLLM's integer weights times their scales;
activations go through the same γ-quantile / max / static quantisers as the integer model,
with a straight-through gradient, so this forward also serves calibration and fine-tuning.
Its gap to the integer reference is the cost of the integer-only nonlinearities.
"""

import math

import torch

from sdllm.models import fixedpoint as fx
from sdllm.models.llama import Llama
from sdllm.models.rotation import prepare
from sdllm.models.sdllm import config_of, spec_of


def _ste(x, x_hat):
    return x + (x_hat - x).detach()


def fq_quantile(x, k: int, q_max: int, theta: int):
    m = torch.kthvalue(x.detach().abs(), k + 1, dim=-1).values.clamp_min(1e-12).unsqueeze(-1)
    q = torch.clamp(torch.round(x.detach() * q_max / m), -q_max, q_max)
    q = torch.where(q.abs() <= theta, torch.zeros_like(q), q)
    return _ste(x, q * m / q_max)


def fq_static(x, x_range, q_max: int):
    return _ste(x, torch.clamp(torch.round(x.detach() * q_max / x_range), -q_max, q_max) * x_range / q_max)


def fq_unsigned_max(x, q_max: int, theta: int):
    m = x.detach().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.clamp(torch.round(x.detach() * q_max / m), 0, q_max)
    q = torch.where(q <= theta, torch.zeros_like(q), q)
    return _ste(x, q * m / q_max)


def _dequantized(entry_weight, scale_fx):
    return entry_weight.double() * (scale_fx.double() / (1 << fx.SCALE_FRAC))[:, None]


class FakeQuantSDLLM(torch.nn.Module):
    """quantize_activations=False gives the weight-only quantised model (float activations)."""

    def __init__(self, float_model: Llama, blob: dict, quantize_activations: bool = True):
        super().__init__()
        self.cfg, self.spec = config_of(blob), spec_of(blob)
        self.model = prepare(float_model, self.spec.rotate, self.spec.seed)
        self._load_weights(blob)
        self.model.eval()
        self.quantize_activations = quantize_activations
        c, s = self.cfg, self.spec
        self.q_max, self.kv_max = fx.qmax(s.act_bits), fx.qmax(s.kv_bits)
        self.k = {}
        for i, entry in enumerate(blob["layers"]):
            n = {"qkv": c.dim, "q": c.head_dim, "o": c.n_heads * c.head_dim, "gate_up": c.dim, "down": c.ffn_dim}
            for point, g in entry["gamma"].items():
                self.k[f"L{i}.{point}"] = fx.quantile_index(n[point], g)
            self.register_buffer(f"v_range{i}", entry["v_range_fx"].float()[None, :, None, :] / (1 << fx.FRAC))
        self.k["head"] = fx.quantile_index(c.dim, blob["head"]["gamma"])

    @torch.no_grad()
    def _load_weights(self, blob):
        c = self.cfg
        hd, nh, nkv = c.head_dim, c.n_heads, c.n_kv_heads
        for layer, entry in zip(self.model.layers, blob["layers"]):
            a, m = layer.attn, layer.mlp
            qkv = _dequantized(entry["qkv.weight"], entry["qkv.scale_fx"])
            a.q_proj.weight.copy_(qkv[: nh * hd] * math.sqrt(hd))
            a.k_proj.weight.copy_(qkv[nh * hd : (nh + nkv) * hd])
            a.v_proj.weight.copy_(qkv[(nh + nkv) * hd :])
            a.o_proj.weight.copy_(_dequantized(entry["o.weight"], entry["o.scale_fx"]))
            gu = _dequantized(entry["gate_up.weight"], entry["gate_up.scale_fx"])
            m.gate_proj.weight.copy_(gu[: c.ffn_dim])
            m.up_proj.weight.copy_(gu[c.ffn_dim :])
            m.down_proj.weight.copy_(_dequantized(entry["down.weight"], entry["down.scale_fx"]))
        self.model.lm_head.weight.copy_(_dequantized(blob["head"]["weight"], blob["head"]["scale_fx"]))

    def tap(self, name: str, x):
        if not self.quantize_activations:
            return x
        point = name.rsplit(".", 1)[-1]
        theta = self.spec.theta
        if point == "k":
            return fq_quantile(x, x.shape[-1] - 1, self.kv_max, 0)
        if point == "v":
            return fq_static(x, getattr(self, f"v_range{name.split('.')[0][1:]}"), self.kv_max)
        if point == "p":
            return fq_unsigned_max(x, self.q_max, theta)
        return fq_quantile(x, self.k[name], self.q_max, theta)

    def forward(self, tokens):
        return self.model(tokens, tap=self.tap)
