"""The project's real text: the stdlib's pydoc topics, tokenised with a model's tokenizer.

Held out: the last 10% for the embedded default model (a byte model trained on the first 90%),
the last 40% for pretrained models (calibration windows come from the first 60%).
"""

from functools import lru_cache

import numpy as np

from sdllm.errors import SdllmError
from sdllm.tokenizer import encode, kind

HELD_OUT_FRACTION = 0.1
PRETRAINED_HELD_OUT_FRACTION = 0.4


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def pydoc_bytes() -> bytes:
    return pydoc_text().encode("utf-8")


def split(data, held_out_fraction: float = HELD_OUT_FRACTION):
    """(train, held_out): the held-out part is the last fraction. Bytes become uint8 arrays."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
    cut = int(len(arr) * (1.0 - held_out_fraction))
    return arr[:cut], arr[cut:]


def windows(arr: np.ndarray, length: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows of `length` tokens, shape (n, length)."""
    n = len(arr) // length
    if max_windows is not None:
        n = min(n, max_windows)
    return arr[: n * length].reshape(n, length).astype(np.int64)


def held_out_fraction(tokenizer: dict) -> float:
    return HELD_OUT_FRACTION if kind(tokenizer) == "bytes" else PRETRAINED_HELD_OUT_FRACTION


@lru_cache(maxsize=2)
def _token_ids(tokenizer_json: str | None) -> np.ndarray:
    if tokenizer_json is None:
        return np.frombuffer(pydoc_bytes(), dtype=np.uint8)
    return np.asarray(encode({"type": "hf-tokenizers", "json": tokenizer_json}, pydoc_text()), np.int64)


def token_ids(tokenizer: dict) -> np.ndarray:
    """The whole pydoc text as token ids (cached per tokenizer)."""
    return _token_ids(None if kind(tokenizer) == "bytes" else tokenizer["json"])


def _spread(part: np.ndarray, seq_len: int, n: int, what: str) -> np.ndarray:
    """n evenly spaced non-overlapping windows (fewer if the part is short)."""
    rows = windows(part, seq_len)
    if len(rows) == 0:
        raise SdllmError(f"pydoc topics: the {what} text has {len(part)} tokens, fewer than one window of {seq_len}")
    return rows[:: max(1, len(rows) // n)][:n]


def calibration_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens from the part before the held-out text."""
    train, _ = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    return _spread(train, seq_len, n, "calibration")


def held_out_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens from the held-out text."""
    _, held_out = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    return _spread(held_out, seq_len, n, "held-out")


def calibration_tokens(tokenizer: dict, seq_len: int, n_windows: int):
    """Calibration windows as a torch tensor (n, seq_len)."""
    import torch

    return torch.from_numpy(calibration_windows(tokenizer, seq_len, n_windows))
