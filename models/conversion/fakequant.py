"""The fake-quant float forward of an SDLLM: float arithmetic, the SDLLM's quantisation points.

The float model is prepared as the conversion prepared it (gains folded, rotated); its
weights are replaced by the SDLLM's integer weights times their scales;
activations go through the same γ-quantile / max / static quantisers as the integer model,
with a straight-through gradient, so this forward also serves calibration and fine-tuning.
Its gap to the integer reference is the cost of the integer-only nonlinearities.
"""

import torch

from sdllm import stages
from sdllm.formats.model import ModelFile
from sdllm.models.conversion.matrices import part_divisors, projections
from sdllm.models.conversion.rotation import prepare_as
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.units import order_statistic
from sdllm.models.source.llama import Llama


def _ste(x, x_hat):
    return x + (x_hat - x).detach()


def kth_smallest(a, k: int):
    """The (k+1)-th smallest value along the last axis (torch.kthvalue's). Near the top — γ close
    to 1 — the same value as the (n-k)-th largest, which topk finds 3-4x faster on a CPU."""
    n = a.shape[-1]
    if n - k <= n // 8:
        return torch.topk(a, n - k, dim=-1).values[..., -1]
    return torch.kthvalue(a, k + 1, dim=-1).values


def channel_limits(n: int, q_max: int, wide: int, wide_max: int, like):
    """Each channel's clip: ±wide_max for a wide group's leading channels, ±q_max for the others."""
    limit = torch.full((n,), float(q_max), dtype=like.dtype, device=like.device)
    limit[:wide] = wide_max
    return limit


def fq_quantile(x, k: int, q_max: int, theta: int, wide: int = 0, wide_max: int = 0):
    m = kth_smallest(x.detach()[..., wide:].abs(), k).clamp_min(1e-12).unsqueeze(-1)
    q = torch.round(x.detach() * q_max / m)
    if wide:
        limit = channel_limits(x.shape[-1], q_max, wide, wide_max, q)
        q = torch.minimum(torch.maximum(q, -limit), limit)
    else:
        q = torch.clamp(q, -q_max, q_max)
    q = torch.where(q.abs() <= theta, torch.zeros_like(q), q)
    return _ste(x, q * m / q_max)


def fq_point(x, point: stages.Point, at, k: int | None, x_range=None):
    """Fake quantisation of a point as `at` (a `Precision`) says: k the γ order statistic, x_range
    V's static range."""
    if point.scale is stages.Scale.HEAD_MAX:
        return fq_quantile(x, x.shape[-1] - 1, at.q_max, 0)
    if point.scale is stages.Scale.CHANNEL_STATIC:
        return fq_static(x, x_range, at.q_max)
    if point.scale is stages.Scale.HEAD_MAX_UNSIGNED:
        return fq_unsigned_max(x, at.q_max, at.theta)
    return fq_quantile(x, k, at.step_max, at.theta, at.wide, at.q_max)


def fq_static(x, x_range, q_max: int):
    return _ste(x, torch.clamp(torch.round(x.detach() * q_max / x_range), -q_max, q_max) * x_range / q_max)


def fq_unsigned_max(x, q_max: int, theta: int):
    m = x.detach().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.clamp(torch.round(x.detach() * q_max / m), 0, q_max)
    q = torch.where(q <= theta, torch.zeros_like(q), q)
    return _ste(x, q * m / q_max)


def _dequantized(weight, scale_fx):
    return torch.from_numpy(weight).double() * torch.from_numpy(scale_fx / (1 << fx.SCALE_FRAC)).double()[:, None]


class FakeQuantSDLLM(torch.nn.Module):
    """quantize_activations=False gives the weight-only quantised model (float activations)."""

    def __init__(self, float_model: Llama, model: ModelFile, quantize_activations: bool = True):
        super().__init__()
        self.cfg, self.spec = model.config, model.quant
        self.model = prepare_as(float_model, self.spec, model.rotation, model.balance)
        self._load_weights(model)
        self.model.eval()
        self.quantize_activations = quantize_activations
        c = self.cfg
        self.k = {}
        for i in range(c.n_layers):
            for p in stages.LAYER_POINTS:
                if p.gamma:
                    self.k[p.tap(i)] = order_statistic(p, c, self.spec.at(p, i), model.gamma[p.tap(i)])
            v_range = torch.from_numpy(model.v_range_fx[i]).float()[None, :, None, :] / (1 << fx.FRAC)
            self.register_buffer(f"v_range{i}", v_range)
        self.k[stages.HEAD_IN.tap(None)] = order_statistic(stages.HEAD_IN, c, self.spec.at(stages.HEAD_IN, None),
                                                           model.gamma[stages.HEAD_IN.tap(None)])

    def retarget(self, model: ModelFile, nodes=()) -> "FakeQuantSDLLM":
        """Become the fake-quant form of `model` — the same float model, rotation and balancing,
        other bits or γ (its spec and γ taken whole), other weights only at `nodes` — without
        preparing the float model again (the budget search's trials)."""
        self.spec = model.quant
        for name in self.k:
            point, layer = stages.parse_tap(name)
            self.k[name] = order_statistic(point, self.cfg, self.spec.at(point, layer), model.gamma[name])
        self._load_weights(model, set(nodes))
        return self

    @torch.no_grad()
    def _load_weights(self, model: ModelFile, only=None):
        """Each static stage's integer weights times their scales, split back into the float
        model's projections (undoing the 1/sqrt(head_dim) folded into the queries). only: these
        stages' only."""
        for name, stage, i in stages.static_stages(self.cfg):
            if only is not None and name not in only:
                continue
            w = _dequantized(model.weight(name), model.scales_fx[name])
            for target, d in zip(projections(self.model, stage, i), part_divisors(self.cfg, stage)):
                part, w = w[: target.shape[0]], w[target.shape[0]:]
                target.copy_(part * d if d != 1 else part)

    def tap(self, name: str, x):
        if not self.quantize_activations:
            return x
        point, layer = stages.parse_tap(name)
        x_range = getattr(self, f"v_range{layer}") if point.scale is stages.Scale.CHANNEL_STATIC else None
        return fq_point(x, point, self.spec.at(point, layer), self.k.get(name), x_range)

    def forward(self, tokens):
        return self.model(tokens, tap=self.tap)

    def residuals(self, tokens) -> list:
        """The residual stream entering each layer and the head (`Llama.residuals`), quantised as now."""
        return self.model.residuals(tokens, tap=self.tap)

    def forward_from(self, first: int, x):
        """Logits from the residual stream `x` entering layer `first`: a change at layer `first`
        or later measured without recomputing the layers before it."""
        return self.model.forward_from(first, x, tap=self.tap)
