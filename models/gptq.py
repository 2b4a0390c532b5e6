"""Symmetric per-output-channel integer weights: round-to-nearest, and GPTQ.

GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") quantises one input column at a time and spreads each column's
rounding error over the columns not yet quantised, weighted by the inverse Hessian of the
layer's calibration inputs, so that ‖x·Wᵀ − x·Ŵᵀ‖² stays small on real activations.
Follows the reference implementation (github.com/IST-DASLab/gptq, `fasterquant`).
"""

import torch

ALPHA_GRID = torch.linspace(1.0, 0.5, 21, dtype=torch.float64)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def hessian(x) -> torch.Tensor:
    """x (rows, in_features) -> 2/rows · xᵀx, float64."""
    x = x.reshape(-1, x.shape[-1]).double()
    return 2.0 / x.shape[0] * (x.T @ x)


def _round(w, scale, q_max: int):
    return torch.clamp(torch.round(w / scale[:, None]), -q_max, q_max)


def channel_scales(w, bits: int, search: bool = True) -> torch.Tensor:
    """Per-row scale α·max|w|/Q, α from ALPHA_GRID minimising the row's rounding error (1 without search)."""
    w = w.double()
    q_max = qmax(bits)
    top = w.abs().amax(dim=1).clamp_min(1e-12) / q_max
    if not search:
        return top
    errors = torch.stack([((_round(w, a * top, q_max) * (a * top)[:, None] - w) ** 2).sum(1) for a in ALPHA_GRID])
    return ALPHA_GRID[errors.argmin(0)] * top


def rtn(w, bits: int, search: bool = False):
    """Round-to-nearest: (int8 weights, float64 scales (out,))."""
    scale = channel_scales(w, bits, search)
    return _round(w.double(), scale, qmax(bits)).to(torch.int8), scale


@torch.no_grad()
def gptq(w, h, bits: int, block_size: int = 128, damp: float = 0.01, act_order: bool = True):
    """GPTQ with per-row scales fixed up front. w (out, in), h (in, in) from `hessian`."""
    w = w.double().clone()
    h = h.double().clone()
    q_max = qmax(bits)
    scale = channel_scales(w, bits, search=True)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else torch.arange(w.shape[1])
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    q = torch.zeros_like(w)
    n = w.shape[1]
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        w1, hinv1 = w[:, i1:i2].clone(), h_inv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col, d = w1[:, i], hinv1[i, i]
            qi = torch.clamp(torch.round(col / scale), -q_max, q_max)
            q[:, i1 + i] = qi
            e = (col - qi * scale) / d
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ h_inv[i1:i2, i2:]
    return q[:, torch.argsort(perm)].to(torch.int8), scale
