"""Synthetic SDLLMs of any LLaMA shape: random int weights generated on demand, for measuring
the compiler at scale without downloading a model. Their outputs mean nothing.

A synthetic model.pt-like dict has every small array a real one has (scales, γ, RoPE tables,
embedding) and, instead of the weight matrices, `"synthetic": {"seed": s}`: each stage's
matrix is drawn from a generator seeded by (seed, stage index) whenever it is asked for, so
the whole model is never in memory and the same seed gives the same weights.
"""

import os
from dataclasses import asdict

import numpy as np
import torch
import yaml

from sdllm.errors import SdllmError
from sdllm.models import checkpoint
from sdllm.models import fixedpoint as fx
from sdllm.models.llama import LlamaConfig, rope_tables
from sdllm.models.sdllm import LAYER_GAMMA_POINTS, QuantSpec

# Shapes from the models' published config.json files; max_seq_len is sdllm's default context
# (the KV cache the SDLLM is compiled for), not the model's trained one.
SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536),
    "tinyllama-1.1b": dict(vocab_size=32000, dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn_dim=5632, tie_embeddings=False),
    "llama2-3b": dict(vocab_size=32000, dim=3200, n_layers=26, n_heads=32, n_kv_heads=32, ffn_dim=8640,
                      tie_embeddings=False),  # open_llama_3b
    "llama2-7b": dict(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008, tie_embeddings=False),
}
DEFAULT_SEQ_LEN = 256
DEFAULT_SPEC = QuantSpec(rotate=False, gptq=False)


def shape_of(config: str) -> LlamaConfig:
    """A SHAPES name, or a YAML/JSON file of LlamaConfig fields."""
    if config in SHAPES:
        fields = dict(SHAPES[config])
    elif os.path.isfile(config):
        with open(config) as f:
            try:
                fields = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise SdllmError(f"--synthetic {config}: not YAML or JSON ({e})") from None
        if not isinstance(fields, dict):
            raise SdllmError(f"--synthetic {config}: expected a mapping of LlamaConfig fields")
    else:
        raise SdllmError(f"--synthetic {config!r}: not a known shape ({', '.join(SHAPES)}) or a config file")
    fields.setdefault("max_seq_len", DEFAULT_SEQ_LEN)
    known = set(LlamaConfig.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SdllmError(f"--synthetic {config}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    cfg = LlamaConfig(**fields)
    if cfg.dim % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise SdllmError(f"--synthetic {config}: dim {cfg.dim} must divide by n_heads {cfg.n_heads}, "
                         f"and n_heads by n_kv_heads {cfg.n_kv_heads}")
    return cfg


def synthetic_blob(cfg: LlamaConfig, spec: QuantSpec = DEFAULT_SPEC, seed: int = 0) -> dict:
    rng = np.random.default_rng([seed, 1 << 20])
    scale = lambda n: torch.full((n,), fx.to_fixed(0.02, fx.SCALE_FRAC), dtype=torch.int64)  # noqa: E731
    qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    layers = [{
        "qkv.scale_fx": scale(qkv_out), "o.scale_fx": scale(cfg.dim),
        "gate_up.scale_fx": scale(2 * cfg.ffn_dim), "down.scale_fx": scale(cfg.dim),
        "qkv.bias_fx": torch.zeros(qkv_out, dtype=torch.int64),
        "v_range_fx": torch.full((cfg.n_kv_heads * cfg.head_dim,), fx.to_fixed(4.0), dtype=torch.int64),
        "gamma": {p: 0.99 for p in LAYER_GAMMA_POINTS},
    } for _ in range(cfg.n_layers)]
    cos, sin = rope_tables(cfg, cfg.max_seq_len)
    embed = rng.normal(0, 1, (cfg.vocab_size, cfg.dim)).astype(np.float32)
    return {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "quant": asdict(spec),
        "tokenizer": {"type": "bytes"} if cfg.vocab_size >= 256 else {"type": "none"},
        "synthetic": {"seed": seed},
        "embed_fx": torch.from_numpy(fx.to_fixed(embed).astype(np.int32)),
        "rope_cos_fx": torch.from_numpy(fx.to_fixed(cos.numpy(), fx.TRIG_FRAC)),
        "rope_sin_fx": torch.from_numpy(fx.to_fixed(sin.numpy(), fx.TRIG_FRAC)),
        "eps_fx": int(round(cfg.norm_eps * (1 << (2 * fx.FRAC)))),
        "layers": layers,
        "head": {"scale_fx": scale(cfg.vocab_size), "gamma": 0.99},
    }


def synthetic_weight(blob: dict, index: int, shape: tuple) -> np.ndarray:
    """Stage `index`'s weights: uniform symmetric ints of the model's weight bits."""
    q = fx.qmax(blob["quant"]["weight_bits"])
    rng = np.random.default_rng([blob["synthetic"]["seed"], index])
    return rng.integers(-q, q + 1, size=shape, dtype=np.int8)
