"""What conversion learns from calibration text, gathered in one streaming pass of the prepared
float model: per quantisation point the γ search's error for every γ in GAMMA_GRID, the
Hessian 2/n·xᵀx of every static stage's input (for GPTQ), and the static range of V.
Nothing is kept per token, so memory does not grow with the amount of calibration text.
"""

import numpy as np
import torch

from sdllm import stages
from sdllm.models.conversion.fakequant import channel_limits
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.source.llama import Llama

GAMMA_GRID = (1.0, 0.9995, 0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.9, 0.85, 0.8)
GAMMA_POINTS = {p.name for p in stages.POINTS.values() if p.gamma}
HESSIAN_POINTS = {s.input.name for s in stages.STAGES.values() if s.static}


def kind(name: str) -> str:
    """The quantisation point of a tap name ('L3.q' -> 'q')."""
    return name.rsplit(".", 1)[-1]


def rows_of(x):
    """A tap's activation as rows: (tokens, n), or (tokens, heads, n) for per-head points."""
    x = x.detach()
    return x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[-1]) if x.dim() == 4 else x.reshape(-1, x.shape[-1])


def gamma_errors(x, at, weight=None, ordered=None) -> np.ndarray:
    """Squared error of γ-quantile quantisation as `at` (a `Precision`) says — clipping range = the
    γ order statistic of |x| per row — for every γ in GAMMA_GRID, channel-weighted if `weight` is
    given. ordered: |x| sorted per row, if at hand."""
    n, q_max = x.shape[-1] - at.wide, at.step_max
    if ordered is None or at.wide:  # a wide group's order statistic is over the other channels
        ordered = x[:, at.wide:].abs().sort(dim=-1).values
    limit = channel_limits(x.shape[-1], q_max, at.wide, at.q_max, x)
    out = []
    for g in GAMMA_GRID:
        m = ordered[:, fx.quantile_index(n, g)].clamp_min(1e-12).unsqueeze(-1)
        q = torch.minimum(torch.maximum(torch.round(x * q_max / m), -limit), limit)
        q = torch.where(q.abs() <= at.theta, torch.zeros_like(q), q)
        err = (x - q * m / q_max) ** 2
        out.append((err * weight if weight is not None else err).sum().item())
    return np.array(out)


class CalibrationStats:
    """`tap` for `Llama.forward`. spec: each point's integer range and dead zone; channel_weight:
    tap name -> per-input-channel weight of the γ error (how much an error in that channel costs
    the consuming weights); absent: uniform. menu: point name -> further `Precision`s to
    calibrate γ for (the budget search's candidates), besides the spec's own."""

    def __init__(self, spec, channel_weight: dict, gammas: bool = True, hessians: bool = True, menu: dict | None = None):
        self.spec = spec
        self.channel_weight = channel_weight
        self.gammas, self.hessians = gammas, hessians
        self.menu = menu or {}
        self.errors, self.xtx, self.rows, self.v_range = {}, {}, {}, {}

    def precisions(self, name: str) -> list:
        """The spec's precision of a tap, then the menu's others."""
        point, layer = stages.parse_tap(name)
        own = self.spec.at(point, layer)
        return [own] + [p for p in self.menu.get(point.name, ()) if p != own]

    @torch.no_grad()
    def tap(self, name, x):
        k = kind(name)
        if k == stages.VALUE.name:  # (batch, kv heads, tokens, head_dim)
            top = x.detach().abs().amax(dim=(0, 2)).double()
            self.v_range[name] = torch.maximum(self.v_range.get(name, top), top)
        if self.gammas and k in GAMMA_POINTS:
            r = rows_of(x).reshape(-1, x.shape[-1]).float()
            errors = self.errors.setdefault(name, {})
            weight = self.channel_weight.get(name)
            ordered = r.abs().sort(dim=-1).values
            for at in self.precisions(name):
                errors[at] = errors.get(at, 0) + gamma_errors(r, at, weight, ordered)
        if self.hessians and k in HESSIAN_POINTS:
            r = rows_of(x).double()
            self.xtx[name] = self.xtx.get(name, 0) + r.T @ r
            self.rows[name] = self.rows.get(name, 0) + r.shape[0]
        return x

    def run(self, model: Llama, tokens) -> "CalibrationStats":
        with torch.no_grad():
            for window in tokens:
                model(window[None], tap=self.tap)
        return self

    def _own(self, name: str, at):
        if at is None:
            point, layer = stages.parse_tap(name)
            at = self.spec.at(point, layer)
        return at

    def gamma(self, name: str, at=None) -> float:
        """γ of a tap at the spec's precision, or at `at` (one of the menu's)."""
        if not self.gammas:
            return 1.0
        return GAMMA_GRID[int(np.argmin(self.errors[name][self._own(name, at)]))]

    def hessian(self, name: str):
        return 2.0 / self.rows[name] * self.xtx[name]


@torch.no_grad()
def record_activations(model: Llama, tokens, points) -> dict:
    """The float activation at each tap point whose kind is in `points`, as `rows_of` gives it."""
    acts = {}

    def tap(name, x):
        if kind(name) in points:
            acts.setdefault(name, []).append(rows_of(x))
        return x

    for window in tokens:
        model(window[None], tap=tap)
    return {k: torch.cat(v) for k, v in acts.items()}
