"""Tokenizers a model or build can name (a plain-dict spec stored in model.pt and network.json):

  {"type": "none"}                                    no tokenizer (a synthetic model): token ids only
  {"type": "bytes"}                                   token = UTF-8 byte (the embedded default model)
  {"type": "hf-tokenizers", "json": tokenizer.json}  a Hugging Face `tokenizers` tokenizer (BPE of
                                                      pretrained models), carried whole; optional
                                                      "bos_id" / "eos_id" (ints) where the checkpoint names them,
                                                      and "chat_template" (the model's own Jinja chat
                                                      template, rendered by `sdllm.chat`)

Decoding never fails on a partial sequence (an incomplete UTF-8 character becomes U+FFFD) and
drops ids outside the vocabulary (e.g. a model's padding rows beyond its tokenizer's).
"""

from functools import lru_cache

from sdllm.errors import SdllmError

TYPES = ("none", "bytes", "hf-tokenizers")


def kind(spec: dict) -> str:
    """The spec's type, or a one-line error naming it and the supported ones."""
    name = spec.get("type")
    if name not in TYPES:
        raise SdllmError(f"tokenizer {name!r} is not supported (supported: {', '.join(TYPES)})")
    return name


@lru_cache(maxsize=4)
def _hf(json_text: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(json_text)
    except Exception as e:  # noqa: BLE001 — tokenizers raises a bare Exception for a malformed tokenizer.json
        raise SdllmError(f"tokenizer: not a valid tokenizer.json ({' '.join(str(e).split())[:120]})") from None


def _no_tokenizer(spec: dict) -> None:
    if kind(spec) == "none":
        raise SdllmError("this model has no tokenizer (a synthetic model): it takes token ids, not text")


def encode(spec: dict, text: str) -> list:
    _no_tokenizer(spec)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # undecodable bytes of a command line arrive as lone surrogates
        bad = ord(text[e.start])
        what = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"code point U+{bad:04X}"
        raise SdllmError(f"prompt: not valid UTF-8 text ({what} at character {e.start})") from None
    if kind(spec) == "bytes":
        return list(text.encode("utf-8"))
    return _hf(spec["json"]).encode(text, add_special_tokens=False).ids


def decode(spec: dict, tokens) -> str:
    _no_tokenizer(spec)
    n = vocab_size(spec)
    ids = [int(t) for t in tokens if 0 <= int(t) < n]
    if spec["type"] == "bytes":
        return bytes(ids).decode("utf-8", errors="replace")
    return _hf(spec["json"]).decode(ids, skip_special_tokens=False)


def eos_id(spec: dict) -> int | None:
    """The end-of-sequence token id, where the checkpoint names one."""
    return spec.get("eos_id")


def token_text(spec: dict, token_id: int | None) -> str:
    """A special token's text as a chat template writes it (e.g. '<|im_end|>'); '' for none."""
    if token_id is None or kind(spec) != "hf-tokenizers":
        return ""
    return _hf(spec["json"]).id_to_token(int(token_id)) or ""


class TextStream:
    """Decodes generated tokens as they come: `push(token)` returns the text they add, holding
    back an incomplete UTF-8 character (or a token's partial bytes) until it is complete."""

    def __init__(self, spec: dict):
        self.spec, self.tokens, self.shown = spec, [], 0

    def push(self, token: int) -> str:
        self.tokens.append(int(token))
        text = decode(self.spec, self.tokens)
        stable = len(text.rstrip("\ufffd"))
        new, self.shown = text[self.shown:stable], max(self.shown, stable)
        return new

    def flush(self) -> str:
        """What is still held back (an incomplete character at the end: U+FFFD)."""
        text = decode(self.spec, self.tokens)
        new, self.shown = text[self.shown:], len(text)
        return new


def vocab_size(spec: dict) -> int:
    _no_tokenizer(spec)
    return 256 if kind(spec) == "bytes" else _hf(spec["json"]).get_vocab_size(with_added_tokens=True)
