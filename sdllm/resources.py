"""What a model, a build or an output needs, estimated before anything is allocated or written,
against what the machine has: a request that cannot fit is one line, not an hour of swapping or
a full disk.

The estimates of what a model, a KV cache or Lava's workers hold are lower bounds (what the
integer forms the tools compute with take at the least), so a refusal is never wrong. A compile's
estimate follows what the compiler does (`compile_bytes`) and is held against measured peaks
(tests/test_resources.py): never below, not far above.
"""

import os
import shutil

from sdllm import stages
from sdllm.errors import SdllmError

INT_BYTES = 8  # the tools compute in int64
LAVA_WORKER_BYTES = 32 << 20  # a forked Lava worker's own memory, at the least


COMPILE_OVERHEAD = 96 << 20  # assumption, measured (~80 MiB): the IR's Python objects, the libraries' working memory
RATES_OVERHEAD = 96 << 20  # assumption, measured (~70 MiB): the integer reference's compiled kernels and GEMM set-up


def compile_bytes(cfg, synthetic: bool, rate_tokens: int, weight_bits: int = 4, act_bits: int = 8) -> int:
    """Memory a compile takes beyond the loaded libraries, following what it does, in order: the
    model as held (a synthetic one's embedding drawn in float32 and kept as int32; a model.pt's
    int8 weights and int64 embedding); tiling and emitting one static stage at a time (its int8
    matrix, non-zero mask, int16 magnitudes, tables: ~6 bytes a weight) with the host's embedding
    scanned and written; for a real model, the spike-rate measurement between them: the integer
    reference streaming one stage's product at a time (float32, or float64 where a sum may pass
    2**24: act_bits is the widest activation), its KV caches and rate_tokens tokens' activations."""
    shapes = list(stages.static_shapes(cfg).values())
    params, widest = sum(n * m for n, m in shapes), max(n * m for n, m in shapes)
    embed = cfg.vocab_size * cfg.dim
    held = 4 * embed if synthetic else params + INT_BYTES * embed
    work = 6 * widest + (4 if synthetic else INT_BYTES) * embed
    if synthetic:
        work = max(work, 4 * embed)  # drawing the embedding: float32 beside its int32 copy
    if rate_tokens and not synthetic:
        q_w, q_a = (1 << (weight_bits - 1)) - 1, (1 << (act_bits - 1)) - 1
        product = max(n * m * (4 if q_w * q_a * m < 1 << 24 else 8) for n, m in shapes)
        widest_row = max(cfg.vocab_size, 2 * cfg.ffn_dim, cfg.n_heads * cfg.max_seq_len)
        rates = RATES_OVERHEAD + product + kv_bytes(cfg) + 4 * INT_BYTES * min(rate_tokens, cfg.max_seq_len) * widest_row
        work = max(work, rates)
    return COMPILE_OVERHEAD + held + work


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
