"""Synthetic SDLLMs of any LLaMA shape: random int weights generated on demand, for measuring
the compiler at scale without downloading a model. Their outputs mean nothing.

A synthetic model has every small array a real one has (scales, γ, RoPE tables, embedding) and,
instead of the weight matrices, a seed: each stage's matrix is drawn from a generator seeded by
(seed, stage index) whenever it is asked for (`ModelFile.weight`), so the whole model is never
in memory and the same seed gives the same weights.
"""

import os

import numpy as np
import yaml

from sdllm import stages
from sdllm.errors import SdllmError
from sdllm.formats.fields import Doc, load_yaml
from sdllm.formats.model import LlamaConfig, ModelFile, QuantSpec, read_config
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.source.llama import rope_tables

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
MAX_SHAPE_BYTES = 1 << 16


def shape_of(config: str) -> LlamaConfig:
    """A SHAPES name, or a YAML/JSON file of LlamaConfig fields (every one checked)."""
    where = f"--synthetic {config}"
    if config in SHAPES:
        fields = dict(SHAPES[config])
    elif os.path.isfile(config):
        if os.path.getsize(config) > MAX_SHAPE_BYTES:
            raise SdllmError(f"{where}: {os.path.getsize(config):,} bytes; a shape file of at most {MAX_SHAPE_BYTES:,} is read")
        try:
            with open(config, "rb") as f:
                fields = load_yaml(f)
        except yaml.YAMLError as e:
            raise SdllmError(f"{where}: not YAML or JSON ({' '.join(str(e).split())})") from None
        except OSError as e:
            raise SdllmError(f"{where}: unreadable ({e.strerror})") from None
        if not isinstance(fields, dict):
            raise SdllmError(f"{where}: expected a mapping of LlamaConfig fields")
    else:
        raise SdllmError(f"--synthetic {config!r}: not a known shape ({', '.join(SHAPES)}) or a config file")
    fields.setdefault("max_seq_len", DEFAULT_SEQ_LEN)
    known = set(LlamaConfig.__dataclass_fields__)
    unknown = sorted(set(fields) - known, key=str)
    if unknown:
        raise SdllmError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    defaults = LlamaConfig().to_dict()
    return read_config(Doc({**defaults, **fields}, where))


def synthetic_model(cfg: LlamaConfig, spec: QuantSpec = DEFAULT_SPEC, seed: int = 0) -> ModelFile:
    """Every small array a real SDLLM has (scales, γ, RoPE tables, embedding); the weight
    matrices are drawn on demand (`ModelFile.weight`)."""
    rng = np.random.default_rng([seed, 1 << 20])
    scale = lambda n: np.full((n,), fx.to_fixed(0.02, fx.SCALE_FRAC), dtype=np.int64)  # noqa: E731
    cos, sin = rope_tables(cfg, cfg.max_seq_len)
    embed = rng.standard_normal((cfg.vocab_size, cfg.dim), dtype=np.float32)
    embed *= 1 << fx.FRAC  # exact in float32: a power of two
    points = [(p, i) for i in range(cfg.n_layers) for p in stages.LAYER_POINTS if p.gamma] + [(stages.HEAD_IN, None)]
    return ModelFile(
        config=cfg,
        quant=spec,
        tokenizer={"type": "bytes"} if cfg.vocab_size >= 256 else {"type": "none"},
        embed_fx=np.rint(embed, out=embed).astype(np.int32),
        rope_cos_fx=fx.to_fixed(cos.numpy(), fx.TRIG_FRAC),
        rope_sin_fx=fx.to_fixed(sin.numpy(), fx.TRIG_FRAC),
        eps_fx=int(round(cfg.norm_eps * (1 << (2 * fx.FRAC)))),
        scales_fx={name: scale(n_out) for name, (n_out, _) in stages.static_shapes(cfg).items()},
        gamma={p.tap(i): 0.99 for p, i in points},
        bias_fx=[np.zeros(stages.ENTRY_STAGE.n_out(cfg), np.int64) for _ in range(cfg.n_layers)],
        v_range_fx=[np.full((cfg.n_kv_heads, cfg.head_dim), fx.to_fixed(4.0), dtype=np.int64) for _ in range(cfg.n_layers)],
        synthetic_seed=seed,
    )

