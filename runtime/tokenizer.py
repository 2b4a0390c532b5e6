"""Tokenizers a model or build can name (a plain-dict spec stored in model.pt and network.json):

  {"type": "bytes"}                                   token = UTF-8 byte (the embedded default model)
  {"type": "hf-tokenizers", "json": tokenizer.json}  a Hugging Face `tokenizers` tokenizer (BPE of
                                                      pretrained models), carried whole
"""

from functools import lru_cache

from sdllm.errors import SdllmError

TYPES = ("bytes", "hf-tokenizers")


def _check(spec: dict) -> str:
    kind = spec.get("type")
    if kind not in TYPES:
        raise SdllmError(f"tokenizer {kind!r} is not supported (supported: {', '.join(TYPES)})")
    return kind


@lru_cache(maxsize=4)
def _hf(json_text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json_text)


def encode(spec: dict, text: str) -> list:
    if _check(spec) == "bytes":
        return list(text.encode("utf-8"))
    return _hf(spec["json"]).encode(text, add_special_tokens=False).ids


def decode(spec: dict, tokens) -> str:
    if _check(spec) == "bytes":
        return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
    return _hf(spec["json"]).decode([int(t) for t in tokens], skip_special_tokens=False)


def vocab_size(spec: dict) -> int:
    return 256 if _check(spec) == "bytes" else _hf(spec["json"]).get_vocab_size(with_added_tokens=True)
