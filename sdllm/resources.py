"""What a model, a build or an output needs, estimated before anything is allocated or written,
against what the machine has: a request that cannot fit is one line, not an hour of swapping or
a full disk.

The estimates are lower bounds (what the integer forms the tools compute with take at the
least), so a refusal is never wrong; what passes may still need more.
"""

import os
import shutil

from sdllm import stages
from sdllm.errors import SdllmError

INT_BYTES = 8  # the tools compute in int64
LAVA_WORKER_BYTES = 32 << 20  # a forked Lava worker's own memory, at the least


def model_bytes(cfg, weight_bytes: int = INT_BYTES) -> int:
    """Memory to hold and run an SDLLM of this shape: its weights at weight_bytes each (0: drawn
    one stage at a time, as a synthetic model's are: the largest stage), and as int64 its
    embedding, RoPE tables and KV cache."""
    shapes = [n * m for n, m in stages.static_shapes(cfg).values()]
    weights = sum(shapes) * weight_bytes if weight_bytes else max(shapes) * INT_BYTES
    return weights + INT_BYTES * (cfg.vocab_size * cfg.dim + cfg.max_seq_len * cfg.head_dim) + kv_bytes(cfg)


def weight_bytes(cfg) -> int:
    """Every static stage's weights as int64."""
    return INT_BYTES * sum(n * m for n, m in stages.static_shapes(cfg).values())


def kv_bytes(cfg) -> int:
    """A KV cache of max_seq_len positions in every layer, as int64."""
    return INT_BYTES * cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * cfg.max_seq_len


def available_memory() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable, within the cgroup's limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                avail = min(avail, int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    return avail


def require_memory(need: int, what: str) -> None:
    avail = available_memory()
    if need > avail:
        raise SdllmError(f"{what}: needs at least {_size(need)} of memory, this machine has {_size(avail)} available")


def require_disk(need: int, directory: str, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if need > free:
        raise SdllmError(f"{what}: needs at least {_size(need)} of disk, {directory} has {_size(free)} free")


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):,.1f} {unit}"
    return f"{n} bytes"
