"""Learned rotations (SpinQuant, Liu et al. 2024, "SpinQuant: LLM quantization with learned
rotations"): the residual rotation R1 and the per-layer value rotation R2, optimised on
calibration text by Cayley SGD on the orthogonal group, starting from the spec's randomised
Hadamards (`rotation.randomized_hadamard`, `rotation.head_hadamards`).

With a wide channel group (`QuantSpec.wide_channels` = g; ResQ, Saxena et al. 2025, "ResQ:
mixed-precision quantization of large language models with low-rank residuals"), R1 starts from
the principal axes of the residual readers' inputs: R1 = P·diag(H_g, H_{d−g}), P their
eigenvectors by decreasing variance, H the seeded randomised Hadamards. Its first g channels
span the highest-variance subspace, and the training, which sees those channels at 8 bits, keeps
it there.

What is trained is the float model with its weights in float (GPTQ comes after, on the rotated
model, as for the random Hadamard) and every activation fake-quantised at the SDLLM's
quantisation points with the spec's bits, γ and dead zones; the loss is KL(float model ‖ that
model) per token. The rotations are not fused into the weights while training: a quantisation
point that reads the residual stream (the attention and MLP entries, the LM head) sees x·R1 and hands on Q(x·R1)·R1ᵀ, the
values and the attention output see each head rotated by R2 (`rotation.rotate_heads`'
convention) — the numbers the fused model gives, at a fraction of the cost of rotating every
weight in every step. In float, without the quantisers, nothing depends on R1 or R2: any
orthogonal pair leaves the logits unchanged (`rotation.prepare` fuses them exactly like the
Hadamards).

Cayley SGD (Li, Fuxin and Todorovic 2020, "Efficient Riemannian optimization on the Stiefel
manifold via the Cayley transform"; SpinQuant's SGDG without momentum): the step along the skew
matrix A = (G Xᵀ − X Gᵀ)/2 is X <- (I + a/2·A)⁻¹ (I − a/2·A) X with a = min(lr, 1/‖A‖₁), so X stays
orthogonal to rounding and no step turns it by more than about a radian.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdllm import stages
from sdllm.models.conversion.calibration import CalibrationStats, kind, rows_of
from sdllm.models.conversion.fakequant import fq_point
from sdllm.models.conversion.rotation import head_hadamards, prepare, randomized_hadamard
from sdllm.models.integer.units import order_statistic
from sdllm.models.source.llama import Llama

RESIDUAL_READERS = tuple(p.name for p in stages.RESIDUAL_READERS)


@dataclass(frozen=True)
class RotationTraining:
    steps: int = 100
    lr: float = 0.2  # cosine-decayed to 0; each step is also capped at 1/‖A‖₁
    windows_per_step: int = 1  # calibration windows per step
    heads: bool = True  # also learn R2 (per layer, shared by the layer's heads)
    gamma_windows: int = 2  # calibration windows for the γ the training quantisers use


def cayley_step(x, grad, lr: float):
    """One Cayley SGD step of the orthogonal matrix x (n, n) against the Euclidean gradient."""
    a = 0.5 * (grad @ x.T - x @ grad.T)
    step = min(lr, 1.0 / (a.abs().sum(0).max().item() + 1e-12))
    eye = torch.eye(len(x), dtype=x.dtype)
    return torch.linalg.solve(eye + 0.5 * step * a, (eye - 0.5 * step * a) @ x)


class RotatedFakeQuant:
    """`tap` for `Llama.forward` of the prepared model without R1 and R2: fake-quantises every point
    as the SDLLM would after fusing r1 (dim, dim) and r2 (layers, head_dim, head_dim) or None."""

    def __init__(self, cfg, spec, k: dict, r1, r2):
        self.cfg, self.spec, self.k = cfg, spec, k
        self.r1, self.r2 = r1, r2

    def _quantise(self, name, x):
        point, layer = stages.parse_tap(name)
        # V: this window's range stands in for calibration's
        x_range = x.detach().abs().amax(dim=(0, 2), keepdim=True).clamp_min(1e-8) if point.scale is stages.Scale.CHANNEL_STATIC else None
        return fq_point(x, point, self.spec.at(point, layer), self.k.get(name), x_range)

    def tap(self, name, x):
        k = kind(name)
        if k in RESIDUAL_READERS:
            r = self.r1.to(x.dtype)
            return self._quantise(name, x @ r) @ r.T
        if k in (stages.VALUE.name, stages.ATTN_OUT.name) and self.r2 is not None:
            r = self.r2[int(name.split(".")[0][1:])].to(x.dtype)
            if k == stages.VALUE.name:  # (batch, kv heads, tokens, head_dim)
                return self._quantise(name, x @ r) @ r.T
            heads = x.unflatten(-1, (self.cfg.n_heads, self.cfg.head_dim))  # (batch, tokens, heads, head_dim)
            return (self._quantise(name, (heads @ r).flatten(-2)).unflatten(-1, heads.shape[-2:]) @ r.T).flatten(-2)
        return self._quantise(name, x)


PCA_WINDOWS = 8  # calibration windows whose residual readers' covariance gives a wide group's axes


@torch.no_grad()
def principal_rotation(base: Llama, spec, windows):
    """R1 whose first spec.wide_channels columns span the residual readers' highest-variance
    subspace (of `base`, the model prepared without R1), each subspace spread by a seeded
    randomised Hadamard."""
    dim, g = base.cfg.dim, spec.wide_channels
    cov = torch.zeros(dim, dim, dtype=torch.float64)

    def tap(name, x):
        if kind(name) in RESIDUAL_READERS:
            r = rows_of(x).double()
            cov.add_(r.T @ r)
        return x

    for window in windows:
        base(torch.as_tensor(window)[None], tap=tap)
    variance, axes = torch.linalg.eigh(cov)
    axes = axes[:, torch.argsort(variance, descending=True)]
    return axes @ torch.block_diag(randomized_hadamard(g, spec.seed), randomized_hadamard(dim - g, spec.seed + 1))


def gamma_indices(model: Llama, spec, r1, r2, windows) -> dict:
    """Quantile index per γ point, calibrated (uniform channel weights) on the model rotated by r1, r2."""
    rotated = prepare(model, True, spec.seed, r2 is not None, r1, r2)
    stats = CalibrationStats(spec, {}, gammas=True, hessians=False).run(rotated, windows)
    c = rotated.cfg
    taps = {name: stages.parse_tap(name) for name in stats.errors}
    return {name: order_statistic(point, c, spec.at(point, layer), stats.gamma(name)) for name, (point, layer) in taps.items()}


class Trainer:
    """The float model prepared without R1 and R2 (gains folded, online Hadamards), its
    log-probabilities as the teacher, and the loss of a rotation pair on a window."""

    def __init__(self, model: Llama, spec):
        self.spec = spec
        self.base = prepare(model.eval(), True, spec.seed, False, torch.eye(model.cfg.dim, dtype=torch.float64))
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.teacher = {}  # window key -> the float model's log-probabilities (float16)

    def loss(self, tokens, k: dict, r1, r2, key=None):
        """KL(float ‖ fake-quant with r1, r2) per token on one window (tokens: (length,))."""
        inputs = tokens[None, :-1]
        logits = self.base(inputs, tap=RotatedFakeQuant(self.base.cfg, self.spec, k, r1, r2).tap)[0]
        teacher = self.teacher.get(key) if key is not None else None
        if teacher is None:
            with torch.no_grad():
                teacher = F.log_softmax(self.base(inputs)[0], -1).half()
            if key is not None:
                self.teacher[key] = teacher
        return F.kl_div(F.log_softmax(logits, -1), teacher.float(), log_target=True, reduction="batchmean")

    @torch.no_grad()
    def validate(self, windows, k: dict, r1, r2) -> float:
        """Mean KL per token on `windows` (e.g. held-out text) for a rotation pair."""
        return sum(self.loss(torch.as_tensor(w), k, r1, r2).item() for w in windows) / len(windows)


def learn_rotations(model: Llama, spec, calib_tokens, training: RotationTraining = RotationTraining(),
                    progress: bool = False, trainer: Trainer | None = None):
    """(R1 (dim, dim), R2 (layers, head_dim, head_dim) or None, losses per step), float64.

    Windows are drawn from calib_tokens (windows, length) in an order fixed by spec.seed, so a
    seed gives the same rotations on the same machine and thread count."""
    from tqdm import tqdm

    calib_tokens = torch.as_tensor(calib_tokens)
    cfg = model.cfg
    trainer = trainer or Trainer(model, spec)
    if spec.wide_channels:
        r1 = principal_rotation(trainer.base, spec, calib_tokens[:PCA_WINDOWS])
    else:
        r1 = randomized_hadamard(cfg.dim, spec.seed)
    r2 = torch.stack(head_hadamards(cfg, spec.seed)) if training.heads else None
    k = gamma_indices(model.eval(), spec, r1, r2, calib_tokens[: training.gamma_windows])

    gen = torch.Generator().manual_seed(spec.seed)
    n = len(calib_tokens)
    order = torch.cat([torch.randperm(n, generator=gen)
                       for _ in range(math.ceil(training.steps * training.windows_per_step / n))])
    losses = []
    bar = tqdm(range(training.steps), desc="learning rotations", disable=None if progress else True, leave=False)
    for step in bar:
        lr = 0.5 * training.lr * (1 + math.cos(math.pi * step / training.steps))
        p1 = r1.clone().requires_grad_(True)
        p2 = r2.clone().requires_grad_(True) if r2 is not None else None
        batch = order[step * training.windows_per_step: (step + 1) * training.windows_per_step].tolist()
        total = 0.0
        for i in batch:
            loss = trainer.loss(calib_tokens[i], k, p1, p2, key=i) / len(batch)
            loss.backward()
            total += loss.item()
        with torch.no_grad():
            r1 = cayley_step(r1, p1.grad, lr)
            if r2 is not None:
                r2 = torch.stack([cayley_step(r, g, lr) for r, g in zip(r2, p2.grad)])
        losses.append(total)
        bar.set_postfix(loss=f"{total:.3f}")
    return r1, r2, losses
