"""Symmetric per-output-channel integer weights: round-to-nearest (RTN), and GPTQ.

Each output row r of a linear layer's weight gets one scale s_r, and w[r, j] ≈ s_r · q[r, j]
with q an integer in [−Q, Q], Q = 2^(bits−1) − 1. GPTQ (Frantar et al. 2023, "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers") quantises one input column
at a time and spreads each column's rounding error over the columns not yet quantised, weighted
by the inverse Hessian H = 2/n · xᵀx of the layer's calibration inputs, so that ‖x·Wᵀ − x·Ŵᵀ‖²
stays small on real activations. `gptq` follows the reference implementation
(github.com/IST-DASLab/gptq, `gptq.py` `fasterquant`), in float64 on the CPU.
"""

import torch

from sdllm.models.integer import fixedpoint as fx

ALPHA_GRID = torch.linspace(1.0, 0.5, 21, dtype=torch.float64)  # scale search: fractions of max|w_row|


def qmax(bits: int) -> int:
    assert 2 <= bits <= 8, "weights are stored as int8"
    return fx.qmax(bits)


def hessian(x: torch.Tensor) -> torch.Tensor:
    """x (rows, in_features) -> 2/rows · xᵀx, float64."""
    x = x.reshape(-1, x.shape[-1]).double()
    return 2.0 / x.shape[0] * (x.T @ x)


def _search(w, top, q_max: int):
    buf = torch.empty_like(w)  # reused in place: w-sized temporaries would cost more than the arithmetic
    errors = []
    for alpha in ALPHA_GRID:
        s = (alpha * top)[:, None]
        torch.div(w, s, out=buf).round_().clamp_(-q_max, q_max).mul_(s).sub_(w).square_()
        errors.append(buf.sum(1))
    return ALPHA_GRID[torch.stack(errors).argmin(0)]  # argmin takes the first of ties: α = 1 wins those


def channel_scales(w, bits: int, search: bool = True) -> torch.Tensor:
    """Per-row scale α·max|w_row|/Q, α from ALPHA_GRID minimising the row's RTN error (α = 1 without search)."""
    w = w.double()
    top = w.abs().amax(dim=1).clamp_min(1e-12) / qmax(bits)  # clamp: an all-zero row still gets a positive scale
    if not search:
        return top
    blocks = zip(w.split(256), top.split(256))  # vectorised over blocks of rows that stay in cache
    return torch.cat([_search(wb, tb, qmax(bits)) for wb, tb in blocks]) * top


def rtn(w, bits: int, search: bool = False):
    """Round-to-nearest: (int8 weights (out, in), float64 scales (out,))."""
    scale = channel_scales(w, bits, search)
    q_max = qmax(bits)
    return torch.round(w.double() / scale[:, None]).clamp_(-q_max, q_max).to(torch.int8), scale


@torch.no_grad()
def gptq(w, h, bits: int, block_size: int = 128, damp: float = 0.01, act_order: bool = True):
    """GPTQ with per-row scales fixed up front. w (out, in), h (in, in) from `hessian` -> like `rtn`."""
    w = w.double().clone()
    h = h.double().clone()
    q_max = qmax(bits)
    scale = channel_scales(w, bits, search=True)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    n = w.shape[1]
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else torch.arange(n)
    h = h[perm][:, perm]
    h.diagonal().add_(damp * h.diagonal().mean())
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    wt = w[:, perm].T.contiguous()  # (in, out): each input column is a contiguous row; otherwise as in `fasterquant`
    q = torch.empty_like(wt)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        w1, hinv1 = wt[i1:i2], h_inv[i1:i2, i1:i2]  # w1 is a view: updated in place
        err1 = torch.empty_like(w1)
        for i in range(i2 - i1):
            torch.div(w1[i], scale, out=q[i1 + i]).round_().clamp_(-q_max, q_max)
            torch.addcmul(w1[i], q[i1 + i], scale, value=-1, out=err1[i]).div_(hinv1[i, i])
            w1[i:].addr_(hinv1[i, i:], err1[i], alpha=-1)
        wt[i2:].addmm_(h_inv[i1:i2, i2:].T, err1, alpha=-1)  # lazy batch update of the columns after the block
    return q[torch.argsort(perm)].to(torch.int8).T.contiguous(), scale
