"""Signed 4-bit integers stored two per byte (how a build keeps dense 4-bit synapse blocks)."""

import numpy as np

MAX_BITS = 4  # weights of up to this many bits are stored as nibbles


def holds(weight_bits: int) -> bool:
    """Whether a dense block of weight_bits-bit weights is stored two per byte."""
    return weight_bits <= MAX_BITS


def stored_bytes(n: int, weight_bits: int) -> int:
    """Bytes a dense block of n weights takes in a build."""
    return (n + 1) // 2 if holds(weight_bits) else n


def pack(values: np.ndarray) -> np.ndarray:
    """Flattened values in [-8, 7] -> int8 bytes, low nibble first (odd counts padded with 0)."""
    v = np.asarray(values).reshape(-1)
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ValueError(f"nibbles hold -8..7, got {int(v.min())}..{int(v.max())}")
    if v.size % 2:
        v = np.concatenate([v, [0]])
    nib = (v.astype(np.int64) & 0xF).astype(np.uint8)
    return (nib[0::2] | (nib[1::2] << 4)).view(np.int8)


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """The first n values of `pack`'s bytes, int64."""
    b = np.asarray(packed).astype(np.int64) & 0xFF
    v = np.stack([b & 0xF, b >> 4], 1).reshape(-1)[:n]
    return np.where(v >= 8, v - 16, v)
