"""Import pretrained LLaMA-family checkpoints (LLaMA 2/3, SmolLM2, TinyLlama, Qwen2 with its
q/k/v biases) into `sdllm.models.source.llama.Llama` (float), with their tokenizers.

Two layouts:
- a Hugging Face directory: config.json + *.safetensors + tokenizer.json;
- a GGUF file (llama.cpp). For the llama architecture llama.cpp permuted the Q and K rows for
  its interleaved RoPE: `unpermute_qk` restores the half-split layout this model (and Hugging
  Face) uses; qwen2 GGUFs are not permuted. Quantised tensors (e.g. Q4_1) are dequantised to
  float with the `gguf` package; the tokenizer is rebuilt from the GGUF metadata by transformers.
A tokenizer comes back as the spec `sdllm.tokenizer` reads ({"type": "hf-tokenizers", ...}).
`load_source` takes any of these or our own float checkpoint (the embedded default model's format).
"""

import dataclasses
import os
from importlib import resources

import numpy as np
import torch

from sdllm.errors import SdllmError
from sdllm.formats import files
from sdllm.formats.fields import Doc
from sdllm.formats.model import read_config
from sdllm.models.source.llama import Llama, LlamaConfig
from sdllm.resources import model_bytes, require_memory

DEFAULT_SEQ_LEN = 256
FLOAT_FORMAT = "sdllm-float-llama"
BYTES = {"type": "bytes"}
HF_MODEL_TYPES = ("llama", "qwen2")
HF_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
HF_NAMES = {
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
}
HF_LAYER_NAMES = {
    "self_attn.q_proj.bias": "attn.q_proj.bias",
    "self_attn.k_proj.bias": "attn.k_proj.bias",
    "self_attn.v_proj.bias": "attn.v_proj.bias",
    "self_attn.q_proj.weight": "attn.q_proj.weight",
    "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight",
    "self_attn.o_proj.weight": "attn.o_proj.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
}
GGUF_NAMES = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight", "output.weight": "lm_head.weight"}
GGUF_ARCHITECTURES = ("llama", "qwen2")
GGUF_LAYER_NAMES = {
    "attn_q.bias": "attn.q_proj.bias",
    "attn_k.bias": "attn.k_proj.bias",
    "attn_v.bias": "attn.v_proj.bias",
    "attn_q.weight": "attn.q_proj.weight",
    "attn_k.weight": "attn.k_proj.weight",
    "attn_v.weight": "attn.v_proj.weight",
    "attn_output.weight": "attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "mlp_norm.weight",
}


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _build(cfg: LlamaConfig, state: dict, source: str) -> Llama:
    cfg = read_config(Doc(cfg.to_dict(), source, "config"))  # types, ranges, consistency: before allocating
    require_memory(model_bytes(cfg, weight_bytes=4), source)
    model = Llama(cfg)
    expected = set(model.state_dict())
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise SdllmError(f"{source}: tensors do not match a LLaMA model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in state.items():
        want = tuple(model.state_dict()[k].shape)
        if tuple(v.shape) != want:
            raise SdllmError(f"{source}: tensor {k} has shape {tuple(v.shape)}, the config implies {want}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return model.eval()


def _hf_rope_theta(c: dict, path: str) -> float:
    """rope_theta, top-level (transformers 4) or in rope_parameters (transformers 5); plain RoPE only."""
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise SdllmError(f"{path}: RoPE scaling {kind!r} is not supported (supported: default)")
    return float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))


def _context(max_seq_len: int | None, positions: int, path: str) -> int:
    """The SDLLM's context (the KV cache the chip holds): max_seq_len, by default DEFAULT_SEQ_LEN
    or the model's positions if fewer; within 2..positions."""
    n = min(DEFAULT_SEQ_LEN, positions) if max_seq_len is None else max_seq_len
    if not 2 <= n <= positions:
        raise SdllmError(f"{path}: max_seq_len must be within 2..{positions} (the model's positions), got {n}")
    return n


def _hf_config(path: str) -> dict:
    config_path = os.path.join(path, "config.json")
    if not os.path.lexists(config_path):
        raise SdllmError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    return _json_object(config_path)


def _json_object(path: str) -> dict:
    c = files.read_json(path)
    if not isinstance(c, dict):
        raise SdllmError(f"{path}: expected a JSON object, found {type(c).__name__}")
    return c


def load_hf(path: str, max_seq_len: int | None = None) -> Llama:
    """A Hugging Face LLaMA-family directory (config.json + safetensors) -> float Llama."""
    from safetensors.torch import load_file

    c = _hf_config(path)
    if c.get("model_type") not in HF_MODEL_TYPES:
        raise SdllmError(f"{path}: model_type {c.get('model_type')!r} is not supported (supported: {', '.join(HF_MODEL_TYPES)})")
    if c.get("hidden_act", "silu") != "silu":
        raise SdllmError(f"{path}: hidden_act {c['hidden_act']!r} is not supported (supported: silu)")
    missing = [k for k in HF_REQUIRED if k not in c]
    if missing:
        raise SdllmError(f"{path}: config.json lacks {', '.join(missing)}")
    n_heads = c["num_attention_heads"]
    try:  # a value of the wrong type in the source's config
        cfg = LlamaConfig(
            vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"], n_heads=n_heads,
            n_kv_heads=c.get("num_key_value_heads", n_heads), ffn_dim=c["intermediate_size"],
            max_seq_len=_context(max_seq_len, c.get("max_position_embeddings", 2048), path), rope_theta=_hf_rope_theta(c, path),
            norm_eps=float(c.get("rms_norm_eps", 1e-5)), tie_embeddings=bool(c.get("tie_word_embeddings", False)),
            attn_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
        )
    except (TypeError, ValueError) as e:
        raise SdllmError(f"{path}: config.json: {e}") from None
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not shards:
        raise SdllmError(f"{path}: no .safetensors files")
    raw = {}
    for f in shards:
        shard = os.path.join(path, f)
        files.regular_file(shard)
        try:
            raw.update(load_file(shard))
        except Exception as e:  # noqa: BLE001 — safetensors raises its own error type, and OSError
            raise SdllmError(f"{shard}: not a readable safetensors file ({_first_line(e)})") from None
    state = {}
    for name, t in raw.items():
        if name in HF_NAMES:
            state[HF_NAMES[name]] = t
        elif name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            if rest in HF_LAYER_NAMES:
                state[f"layers.{i}.{HF_LAYER_NAMES[rest]}"] = t
    return _build(cfg, state, path)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's convert permutation of Q/K rows (interleaved RoPE -> half-split)."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str, max_seq_len: int | None = None) -> Llama:
    """A llama or qwen2 GGUF file -> float Llama (quantised tensors dequantised)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise SdllmError(f"{path}: not a readable GGUF file ({_first_line(e)})") from None

    def field(key, default=None):
        f = reader.fields.get(key)
        if f is None:
            if default is None:
                raise SdllmError(f"{path}: GGUF metadata {key} missing")
            return default
        return f.contents()

    arch = field("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise SdllmError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(GGUF_ARCHITECTURES)})")
    tensors = {t.name: t for t in reader.tensors}
    scaling = "rope_freqs" if "rope_freqs.weight" in tensors else field(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise SdllmError(f"{path}: RoPE scaling {scaling!r} is not supported (supported: none)")
    n_heads = int(field(f"{arch}.attention.head_count"))
    n_kv = int(field(f"{arch}.attention.head_count_kv", n_heads))
    if "token_embd.weight" not in tensors:
        raise SdllmError(f"{path}: no token_embd.weight tensor")
    emb = tensors["token_embd.weight"]
    try:  # a value of the wrong type in the source's config
        cfg = LlamaConfig(
            vocab_size=int(emb.shape[1]), dim=int(field(f"{arch}.embedding_length")), n_layers=int(field(f"{arch}.block_count")),
            n_heads=n_heads, n_kv_heads=n_kv, ffn_dim=int(field(f"{arch}.feed_forward_length")),
            max_seq_len=_context(max_seq_len, int(field(f"{arch}.context_length", 2048)), path),
            rope_theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
            norm_eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            tie_embeddings="output.weight" not in tensors, attn_bias="blk.0.attn_q.bias" in tensors,
        )
    except (TypeError, ValueError) as e:
        raise SdllmError(f"{path}: GGUF metadata: {e}") from None
    state = {}
    for name, t in tensors.items():
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])  # GGUF lists dims fastest-first
        if name in GGUF_NAMES:
            target = GGUF_NAMES[name]
        elif name.startswith("blk."):
            i, rest = name[len("blk."):].split(".", 1)
            if rest not in GGUF_LAYER_NAMES:
                continue
            target = f"layers.{i}.{GGUF_LAYER_NAMES[rest]}"
            if arch == "llama" and rest == "attn_q.weight":
                w = unpermute_qk(w, n_heads)
            elif arch == "llama" and rest == "attn_k.weight":
                w = unpermute_qk(w, n_kv)
        else:
            continue
        state[target] = torch.from_numpy(np.ascontiguousarray(w))
    return _build(cfg, state, path)


def load_pretrained(path: str, max_seq_len: int | None = None) -> Llama:
    """A Hugging Face directory or a .gguf file."""
    if os.path.isdir(path):
        return load_hf(path, max_seq_len)
    if path.endswith(".gguf"):
        return load_gguf(path, max_seq_len)
    raise SdllmError(f"{path}: expected a Hugging Face checkpoint directory or a .gguf file")


def load_tokenizer(path: str) -> dict:
    """The tokenizer of a Hugging Face directory (its tokenizer.json) or a GGUF file, as a spec;
    with "bos_id"/"eos_id" where the checkpoint names single ids, and "chat_template" where it
    has one (tokenizer_config.json or chat_template.jinja; the GGUF's tokenizer.chat_template)."""
    if os.path.isdir(path):
        tok_path = os.path.join(path, "tokenizer.json")
        if not os.path.lexists(tok_path):
            raise SdllmError(f"{path}: no tokenizer.json (needed to tokenise text for this model)")
        text = files.read_text(tok_path)
        c = _hf_config(path)
        bos, eos = c.get("bos_token_id"), c.get("eos_token_id")
        tok_config = _hf_tokenizer_config(path)
        template = _hf_chat_template(path, tok_config)
    else:
        tok = _gguf_tokenizer(path)
        text, bos, eos = tok.backend_tokenizer.to_str(), tok.bos_token_id, tok.eos_token_id
        tok_config, template = {}, _gguf_chat_template(path)
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_str(text)
    except Exception as e:
        raise SdllmError(f"{path}: tokenizer.json is not a readable tokenizer ({_first_line(e)})") from None
    if not isinstance(eos, int):  # a list of ids, or none: the tokenizer config's eos token, if it names one
        eos = backend.token_to_id(_token_name(tok_config.get("eos_token")) or "")
    spec = {"type": "hf-tokenizers", "json": text}
    spec.update({k: v for k, v in (("bos_id", bos), ("eos_id", eos)) if isinstance(v, int)})
    if isinstance(template, str) and template:
        spec["chat_template"] = template
    return spec


def _token_name(token) -> str | None:
    """tokenizer_config.json names a special token as a string or as {"content": ...}."""
    return token.get("content") if isinstance(token, dict) else token if isinstance(token, str) else None


def _hf_tokenizer_config(path: str) -> dict:
    config_path = os.path.join(path, "tokenizer_config.json")
    if not os.path.lexists(config_path):
        return {}
    return _json_object(config_path)


def _hf_chat_template(path: str, tok_config: dict) -> str | None:
    """tokenizer_config.json's chat_template (a string, or named templates: the "default" one),
    else a chat_template.jinja file beside it (newer checkpoints)."""
    template = tok_config.get("chat_template")
    if isinstance(template, list):
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    jinja_path = os.path.join(path, "chat_template.jinja")
    if template is None and os.path.lexists(jinja_path):
        template = files.read_text(jinja_path)
    if template is not None and not isinstance(template, str):
        raise SdllmError(f"{os.path.join(path, 'tokenizer_config.json')}: chat_template: expected a string or named "
                         f"templates, found {type(template).__name__}")
    return template


def _gguf_chat_template(path: str) -> str | None:
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None


def _gguf_tokenizer(path: str):
    """transformers rebuilds the tokenizer from the GGUF metadata (tokens, merges, scores, pre-tokenizer)."""
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    except Exception as e:  # transformers raises many kinds for metadata it cannot map
        raise SdllmError(f"{path}: no usable tokenizer in the GGUF metadata ({type(e).__name__}: {_first_line(e)})") from None


def default_float() -> str:
    """The embedded default model's float checkpoint (shipped inside the package)."""
    with resources.as_file(resources.files("sdllm.models.default") / "float.pt") as path:
        return str(path)


def load_float(path: str) -> Llama:
    """Our own float checkpoint (`Llama.float_state`), read with weights_only=True."""
    from sdllm.formats.model import load_blob

    blob = load_blob(path, FLOAT_FORMAT)
    if type(blob.get("format_version")) is not int or blob["format_version"] != 1:
        raise SdllmError(f"{path}: float checkpoint format_version {str(blob.get('format_version'))[:40]} is not supported (reads 1)")
    return Llama.from_float_state(blob)


def load_source(path: str | None, max_seq_len: int | None = None):
    """(float Llama, tokenizer spec) from our float .pt (default: the embedded model), a Hugging
    Face directory or a .gguf. max_seq_len: the SDLLM's context (the KV cache the chip holds)."""
    from sdllm.tokenizer import vocab_size

    path = path or default_float()
    if max_seq_len is not None and max_seq_len < 2:
        raise SdllmError(f"--max-seq-len: must be at least 2, got {max_seq_len}")
    if os.path.isdir(path) or path.endswith(".gguf"):
        if not os.path.exists(path):
            raise SdllmError(f"{path}: no such file or directory")
        model = load_pretrained(path, max_seq_len)
        tokenizer = load_tokenizer(path)
        if vocab_size(tokenizer) > model.cfg.vocab_size:
            raise SdllmError(f"{path}: the tokenizer has {vocab_size(tokenizer)} tokens, more than the model's "
                             f"vocabulary of {model.cfg.vocab_size}")
        return model, tokenizer
    model = load_float(path)
    if max_seq_len is not None and max_seq_len != model.cfg.max_seq_len:
        if max_seq_len > model.cfg.max_seq_len:
            raise SdllmError(f"--max-seq-len: at most the model's context of {model.cfg.max_seq_len}, got {max_seq_len}")
        shorter = Llama(dataclasses.replace(model.cfg, max_seq_len=max_seq_len))
        shorter.load_state_dict(model.state_dict())
        model = shorter
    return model, BYTES
