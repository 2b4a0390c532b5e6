"""Tokenizers a build can name. Only the byte-level one for now: token = UTF-8 byte."""

from sdllm.errors import SdllmError


def _check(spec: dict) -> None:
    if spec.get("type") != "bytes":
        raise SdllmError(f"tokenizer {spec.get('type')!r} is not supported (supported: bytes)")


def encode(spec: dict, text: str) -> list:
    _check(spec)
    return list(text.encode("utf-8"))


def decode(spec: dict, tokens) -> str:
    _check(spec)
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
