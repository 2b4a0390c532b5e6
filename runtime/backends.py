"""Running a build: the backends side by side, and what a run request must satisfy."""

from sdllm import arguments, resources
from sdllm.errors import SdllmError
from sdllm.formats.build import Build
from sdllm.runtime.sampling import GREEDY

BACKENDS = ("lava", "lockstep", "fast")
GRANULARITIES = ("auto", "core", "chip")  # Lava: one process per core, per chip, or per core up to a size


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise SdllmError(f"--granularity: one of {', '.join(GRANULARITIES)}, got {granularity!r}")


def check_request(build: Build, prompt_tokens, n_new: int, backend: str = "lava", granularity: str = "auto") -> None:
    ctx, vocab = build.config.max_seq_len, build.config.vocab_size
    if backend not in BACKENDS:
        raise SdllmError(f"--backend: one of {', '.join(BACKENDS)}, got {backend!r}")
    check_granularity(granularity)
    if not len(prompt_tokens):
        raise SdllmError("--prompt: must not be empty")
    outside = [t for t in prompt_tokens if not 0 <= t < vocab]
    if outside:
        raise SdllmError(f"prompt: token ids must be within 0..{vocab - 1} (the vocabulary), got {outside[0]}")
    arguments.integer("--max-new-tokens", n_new, 1, None, "must be at least 1")
    if len(prompt_tokens) + n_new - 1 > ctx:
        raise SdllmError(f"--prompt + --max-new-tokens: {len(prompt_tokens)} + {n_new} tokens need "
                         f"{len(prompt_tokens) + n_new - 1} positions, the context holds {ctx}")


def run(build: Build, prompt_tokens, n_new: int, backend: str = "lava", granularity: str = "auto", progress: bool = False,
        sampler=GREEDY, eos_id=None, on_token=None):
    """Generation: a `RunResult` (tokens, logits, per-core SOPs, timesteps, traffic).

    sampler: picks each next token (`sdllm.runtime.sampling.Sampler`; greedy by default), the same
    on every backend. eos_id: stop after this token. on_token(id): called with each generated
    token as it is produced (Lava and lockstep: at the end of its token period)."""
    check_request(build, prompt_tokens, n_new, backend, granularity)
    cfg = build.config
    # on top of the build already read: the KV caches, the logits, and the fast executor's folded stage matrices
    need = resources.kv_bytes(cfg) + resources.INT_BYTES * (len(prompt_tokens) + n_new) * cfg.vocab_size
    resources.require_memory(need + (resources.weight_bytes(cfg) if backend == "fast" else 0), f"sdllm-run {build.path}")
    if backend == "lava":
        from sdllm.runtime.lava_backend import run_lava

        return run_lava(build, prompt_tokens, n_new, granularity, progress=progress, sampler=sampler, eos_id=eos_id,
                        on_token=on_token)
    if backend == "fast":
        from sdllm.runtime.fast import run_fast

        return run_fast(build, prompt_tokens, n_new, sampler=sampler, eos_id=eos_id, on_token=on_token)
    if backend == "lockstep":
        from sdllm.runtime.lockstep import run_lockstep

        return run_lockstep(build, prompt_tokens, n_new, sampler=sampler, eos_id=eos_id, on_token=on_token)
    raise AssertionError(backend)  # check_request admits only BACKENDS
