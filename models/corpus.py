"""The project's real text: the stdlib's pydoc topics, as bytes (vocabulary = 256 byte values)."""

import numpy as np

HELD_OUT_FRACTION = 0.1


def pydoc_bytes() -> bytes:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def split(data: bytes, held_out_fraction: float = HELD_OUT_FRACTION):
    """(train, held_out) as uint8 arrays: the held-out part is the last fraction of the text."""
    arr = np.frombuffer(data, dtype=np.uint8)
    cut = int(len(arr) * (1.0 - held_out_fraction))
    return arr[:cut], arr[cut:]


def windows(arr: np.ndarray, length: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows of `length` tokens, shape (n, length)."""
    n = len(arr) // length
    if max_windows is not None:
        n = min(n, max_windows)
    return arr[: n * length].reshape(n, length).astype(np.int64)
