"""A LLaMA-family decoder in PyTorch: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

Small enough to read in one sitting; the float model every SDLLM is converted from.
`forward(tokens, tap)` passes every activation that an SDLLM quantises through
`tap(name, tensor) -> tensor`: identity for the float model, a fake quantiser for the
fake-quant forward, a recorder for calibration. `forward(tokens, cache=KVCache(...))` continues
from the positions already in the cache (generation one token at a time).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdllm.formats.model import LlamaConfig
from sdllm.models.integer.fixedpoint import hadamard_shift
from sdllm.stages import ATTN_IN, ATTN_OUT, HEAD_IN, KEY, MLP_ACT, MLP_IN, PROBS, QUERY, VALUE


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, tap=None, name=""):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (tap(name, x) if tap else x) * self.weight


def rope_tables(cfg: LlamaConfig, n_pos: int):
    """cos/sin of shape (n_pos, head_dim // 2) for the half-split (GPT-NeoX / HF) RoPE layout."""
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
    angles = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv_freq)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """x: (..., seq, head_dim); rotates the pair (x[i], x[i + head_dim/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def hadamard(n: int):
    """Sylvester's Hadamard matrix of order n (a power of two), entries ±1."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def blockwise(x, h):
    """x times the block-diagonal matrix diag(h, h, …) on its last axis: h (b, b) applied to each block of b."""
    return (x.unflatten(-1, (-1, h.shape[0])) @ h).flatten(-2)


def online_hadamard(block: int):
    """What the online Hadamard before down_proj multiplies each block by: H / 2**shift."""
    return (hadamard(block) / 2 ** hadamard_shift(block)).float()


class KVCache:
    """Every layer's keys and values of the positions seen so far."""

    def __init__(self, n_layers: int):
        self.layers = [[None, None] for _ in range(n_layers)]
        self.length = 0


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=cfg.attn_bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.attn_bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=cfg.attn_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        if cfg.qk_hadamard:  # q_proj holds the compensating 4**shift / head_dim
            self.register_buffer("hadamard", online_hadamard(hd), persistent=False)

    def forward(self, x, cos, sin, tap=None, name="", cache=None):
        b, t, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, t, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if hasattr(self, "hadamard"):
            q, k = q @ self.hadamard.to(q.dtype), k @ self.hadamard.to(k.dtype)
        group = c.n_heads // c.n_kv_heads
        if tap is None:
            if cache is not None:
                if cache[0] is not None:
                    k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
                cache[0], cache[1] = k, v
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            total = k.shape[2]
            if t == total:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # the new queries are the last t positions
                mask = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(total - t)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            q, k, v = tap(f"{name}.{QUERY.name}", q), tap(f"{name}.{KEY.name}", k), tap(f"{name}.{VALUE.name}", v)
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            probs = tap(f"{name}.{PROBS.name}", torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
            y = probs @ v
        y = y.transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(tap(f"{name}.{ATTN_OUT.name}", y) if tap else y)


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        b = cfg.down_hadamard
        if b:  # online blockwise Hadamard before down_proj; down_proj holds W·H·2**shift/b
            self.register_buffer("hadamard", online_hadamard(b), persistent=False)

    def forward(self, x, tap=None, name=""):
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        if hasattr(self, "hadamard"):
            h = blockwise(h, self.hadamard.to(h.dtype))
        return self.down_proj(tap(f"{name}.{MLP_ACT.name}", h) if tap else h)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, tap=None, name="", cache=None):
        x = x + self.attn(self.attn_norm(x, tap, f"{name}.{ATTN_IN.name}"), cos, sin, tap, name, cache)
        return x + self.mlp(self.mlp_norm(x, tap, f"{name}.{MLP_IN.name}"), tap, name)


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)
        cos, sin = rope_tables(cfg, cfg.max_seq_len)
        self.register_buffer("rope_cos", cos.float(), persistent=False)
        self.register_buffer("rope_sin", sin.float(), persistent=False)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens, tap=None, cache: KVCache | None = None):
        return self.forward_from(0, self.embed(tokens), tap, cache)

    def forward_from(self, first: int, x, tap=None, cache: KVCache | None = None):
        """Logits from the residual stream `x` entering layer `first` (n_layers: the head's input)."""
        t = x.shape[1]
        start = cache.length if cache is not None else 0
        cos, sin = self.rope_cos[start : start + t], self.rope_sin[start : start + t]
        for i in range(first, self.cfg.n_layers):
            x = self.layers[i](x, cos, sin, tap, f"L{i}", cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.length += t
        return self.lm_head(self.norm(x, tap, HEAD_IN.name))

    @torch.no_grad()
    def residuals(self, tokens, tap=None) -> list:
        """The residual stream entering each layer and the head: n_layers + 1 tensors."""
        cos, sin = self.rope_cos[: tokens.shape[1]], self.rope_sin[: tokens.shape[1]]
        xs = [self.embed(tokens)]
        for i, layer in enumerate(self.layers):
            xs.append(layer(xs[-1], cos, sin, tap, f"L{i}"))
        return xs

    @torch.no_grad()
    def generate(self, prompt: list, n_new: int) -> list:
        """Greedy continuation with a KV cache: the prompt in one pass, then one token at a time."""
        cache = KVCache(self.cfg.n_layers)
        tokens = list(prompt)
        logits = self(torch.tensor([tokens]), cache=cache)
        for _ in range(n_new):
            tokens.append(int(logits[0, -1].argmax()))
            if len(tokens) == len(prompt) + n_new:
                break
            logits = self(torch.tensor([tokens[-1:]]), cache=cache)
        return tokens

    def float_state(self) -> dict:
        """Plain tensors (no tied duplicates) plus the config: what `torch.save` stores."""
        sd = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.cfg.tie_embeddings:
            sd.pop("lm_head.weight")
        return {"format": "sdllm-float-llama", "format_version": 1, "config": self.cfg.to_dict(), "state": sd}

    @classmethod
    def from_float_state(cls, blob: dict) -> "Llama":
        model = cls(LlamaConfig(**blob["config"]))
        model.load_state_dict(blob["state"], strict=not model.cfg.tie_embeddings)
        return model
