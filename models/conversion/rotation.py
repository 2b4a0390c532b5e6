"""γ-SQP step 1's rotation, fused QuaRot-style: function-preserving rewrites of a float Llama.

1. `fold_norms`: every RMSNorm gain goes into the linears that read the normalised stream
   (q/k/v, gate/up, LM head); the norms keep only x / rms(x), which commutes with any
   rotation because rms(x·Q) = rms(x) for orthogonal Q.
2. `rotate_residual`: the residual stream becomes x·Q for a randomised Hadamard Q — the
   embedding and the writers (o, down) absorb Q, the readers absorb Qᵀ. Outlier channels
   are spread over all channels, so a per-token quantisation scale fits every channel.
3. `add_down_hadamard`: an online blockwise Hadamard H before down_proj (the SwiGLU output
   has the worst outliers and is not on the residual stream); down_proj absorbs Hᵀ.
4. `add_qk_hadamard`: an online Hadamard on each head's query and key after RoPE (QuaRot does
   it for its KV cache): q·k is unchanged, and the 4-bit query spikes lose less.
5. `rotate_heads`: an orthogonal R on every head's values, fused offline (SpinQuant's R2):
   v_proj's rows (and bias) of each KV head absorb Rᵀ, o_proj's columns of each query head R
   (query head h reads KV head h // (n_heads / n_kv_heads)). P·V is linear per head, so each
   head's attention output arrives rotated by R and o_proj undoes it; the cached values and o's
   input lose their outlier channels. Free at run time: no online transform.
After them `sdllm.models.conversion.balance` may scale the channels of down_proj's and o_proj's inputs.
The neuron units run the online transforms with additions (`fixedpoint.hadamard`).
Each gives a model whose logits equal the input model's up to float rounding: `fold_norms`
a new one, the others rewrite the (gain-free) model they are given, to keep one copy in memory.
"""

import dataclasses

import torch

from sdllm.models.conversion.balance import balance as fold_balance
from sdllm.models.integer.fixedpoint import hadamard_shift
from sdllm.models.source.llama import Llama, blockwise, hadamard, online_hadamard


def _two_power(n: int) -> int:
    return n & -n


def random_orthogonal(n: int, seed: int):
    """Haar-random orthogonal n×n (QR of a seeded Gaussian, signs fixed), float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).contiguous()


def randomized_hadamard(n: int, seed: int):
    """Orthogonal n×n: diag(random signs) · (R_m ⊗ H_k/√k), k the largest power of two dividing n,
    R_m a random orthogonal matrix of the odd rest m = n/k (identity when n is a power of two)."""
    k = _two_power(n)
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
    rest = random_orthogonal(n // k, seed + 1) if n > k else torch.ones(1, 1, dtype=torch.float64)
    return signs[:, None] * torch.kron(rest, hadamard(k) / k**0.5)


def _with_config(model: Llama, **changes) -> Llama:
    out = Llama(dataclasses.replace(model.cfg, **changes))
    state = {k: v for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings and not out.cfg.tie_embeddings:
        state["lm_head.weight"] = model.embed.weight.detach().clone()
    out.load_state_dict(state)
    return out.eval()


@torch.no_grad()
def fold_norms(model: Llama) -> Llama:
    out = _with_config(model, tie_embeddings=False)
    for layer in out.layers:
        for lin, norm in ((layer.attn.q_proj, layer.attn_norm), (layer.attn.k_proj, layer.attn_norm),
                          (layer.attn.v_proj, layer.attn_norm), (layer.mlp.gate_proj, layer.mlp_norm),
                          (layer.mlp.up_proj, layer.mlp_norm)):
            lin.weight.mul_(norm.weight)
        layer.attn_norm.weight.fill_(1.0)
        layer.mlp_norm.weight.fill_(1.0)
    out.lm_head.weight.mul_(out.norm.weight)
    out.norm.weight.fill_(1.0)
    return out


@torch.no_grad()
def rotate_residual(model: Llama, q) -> Llama:
    """x -> x·Q on the residual stream, in place. The model's norms must be gain-free (`fold_norms`)."""
    out = model

    def mul(lin_weight, left=None, right=None):
        w = lin_weight.double()
        w = left @ w if left is not None else w
        w = w @ right if right is not None else w
        lin_weight.copy_(w.to(lin_weight.dtype))

    mul(out.embed.weight, right=q)
    for layer in out.layers:
        for lin in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj, layer.mlp.gate_proj, layer.mlp.up_proj):
            mul(lin.weight, right=q)
        mul(layer.attn.o_proj.weight, left=q.T)
        mul(layer.mlp.down_proj.weight, left=q.T)
    mul(out.lm_head.weight, right=q)
    return out


@torch.no_grad()
def add_down_hadamard(model: Llama) -> Llama:
    """Online Hadamard before down_proj (in place), blocks of the largest power of two dividing ffn_dim."""
    block = _two_power(model.cfg.ffn_dim)
    model.cfg = dataclasses.replace(model.cfg, down_hadamard=block)
    h = hadamard(block) * 2 ** hadamard_shift(block) / block
    for layer in model.layers:
        layer.mlp.register_buffer("hadamard", online_hadamard(block), persistent=False)
        w = layer.mlp.down_proj.weight
        w.copy_(blockwise(w.double(), h).to(w.dtype))
    return model


@torch.no_grad()
def add_qk_hadamard(model: Llama) -> Llama:
    """Online Hadamard on every head's query and key after RoPE (in place; q·k is unchanged, the
    query weights absorb the 4**shift/head_dim the ±1 transform's shift leaves). head_dim must be
    a power of two."""
    hd = model.cfg.head_dim
    if _two_power(hd) != hd:
        raise ValueError(f"online q/k Hadamard: head_dim must be a power of two, got {hd}")
    model.cfg = dataclasses.replace(model.cfg, qk_hadamard=True)
    factor = 4 ** hadamard_shift(hd) / hd
    for layer in model.layers:
        a = layer.attn
        a.cfg = model.cfg
        a.register_buffer("hadamard", online_hadamard(hd), persistent=False)
        a.q_proj.weight.mul_(factor)
        if a.q_proj.bias is not None:
            a.q_proj.bias.mul_(factor)
    return model


@torch.no_grad()
def rotate_heads(model: Llama, heads) -> Llama:
    """Values -> v·R on every head (in place). heads: per layer one head_dim × head_dim orthogonal R
    shared by the layer's heads, or (n_kv_heads, head_dim, head_dim), one per KV head. v_proj's rows
    (and bias) of KV head j absorb R_jᵀ, o_proj's columns of query head h R_{h // group}."""
    c = model.cfg
    group = c.n_heads // c.n_kv_heads
    for layer, r in zip(model.layers, heads, strict=True):
        a = layer.attn
        r = torch.as_tensor(r, dtype=torch.float64).expand(c.n_kv_heads, c.head_dim, c.head_dim)
        w = a.v_proj.weight  # rows: (kv head, head_dim)
        w.copy_((r.transpose(1, 2) @ w.double().unflatten(0, (c.n_kv_heads, c.head_dim))).flatten(0, 1).to(w.dtype))
        if a.v_proj.bias is not None:
            b = a.v_proj.bias
            b.copy_((b.double().unflatten(0, (c.n_kv_heads, 1, c.head_dim)) @ r).flatten().to(b.dtype))
        w = a.o_proj.weight  # columns: (query head, head_dim)
        cols = w.double().unflatten(1, (c.n_heads, c.head_dim)).transpose(0, 1)  # (heads, dim, head_dim)
        w.copy_((cols @ r.repeat_interleave(group, dim=0)).transpose(0, 1).flatten(1).to(w.dtype))
    return model


def head_hadamards(cfg, seed: int) -> list:
    """One randomised Hadamard per layer for `rotate_heads`, shared by the layer's heads, seeded per
    layer from `seed` (not the residual's: 1_000_003·(seed + 1) + layer)."""
    return [randomized_hadamard(cfg.head_dim, 1_000_003 * (seed + 1) + i) for i in range(cfg.n_layers)]


def prepare(model: Llama, rotate: bool, seed: int, head_rotation: bool = True, residual=None, heads=None,
            balance=None) -> Llama:
    """The float model an SDLLM is quantised from: gains folded, and with `rotate` the residual
    rotation (`residual`, by default the randomised Hadamard of `seed`), the online Hadamard
    before down_proj, when head_dim is a power of two the online Hadamard on queries and keys,
    and with `head_rotation` a rotation of every head's values fused into v_proj/o_proj
    (`rotate_heads`; `heads`, by default the randomised Hadamards of `head_hadamards`); then,
    given them, the channel scales of `sdllm.models.conversion.balance`."""
    out = fold_norms(model)
    if rotate:
        q = randomized_hadamard(model.cfg.dim, seed) if residual is None else torch.as_tensor(residual, dtype=torch.float64)
        out = add_down_hadamard(rotate_residual(out, q))
        if _two_power(out.cfg.head_dim) == out.cfg.head_dim:
            out = add_qk_hadamard(out)
        if head_rotation:
            out = rotate_heads(out, head_hadamards(out.cfg, seed) if heads is None else heads)
    if balance is not None:
        out = fold_balance(out, balance)
    return out


def prepare_as(model: Llama, spec, rotation: dict | None = None, balance: dict | None = None) -> Llama:
    """`prepare` as a QuantSpec says, with a learned rotation's matrices ({'residual', 'heads'}, as
    model.pt stores them) in place of the Hadamards, and channel scales ({'down', 'values'}) if given."""
    r = rotation or {}
    return prepare(model, spec.rotate, spec.seed, spec.head_rotation, r.get("residual"), r.get("heads"), balance)
