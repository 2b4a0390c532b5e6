"""Running a build: the backends side by side, behind one call (one prompt, or a batch of them
sharing the pipeline)."""

from sdllm import resources
from sdllm.formats.build import Build
from sdllm.runtime.generation import Generation
from sdllm.runtime.requests import check_batch, check_request
from sdllm.runtime.sampling import GREEDY


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


def run_batch(build: Build, prompts: list, n_new: int, backend: str = "lava", granularity: str = "auto",
              progress: bool = False, sampler=GREEDY, eos_id=None) -> list:
    """Several prompts in one run: their sequences side by side in the KV caches, the prompts'
    positions pipelined one after another, then their new tokens in turns (`sdllm.schedule.Timeline`).
    Each prompt's `RunResult` — the tokens, logits and per-core SOPs it gets alone; its timesteps
    from the batch's first step to its last logits."""
    check_batch(build, prompts, n_new, backend, granularity)
    cfg = build.config
    n_positions = sum(len(p) + n_new - 1 for p in prompts)
    need = resources.kv_bytes(cfg) + resources.INT_BYTES * (n_positions + len(prompts)) * cfg.vocab_size
    resources.require_memory(need + (resources.weight_bytes(cfg) if backend == "fast" else 0), f"sdllm-run {build.path}")
    generations = [Generation(len(p), eos_id) for p in prompts]
    if backend == "lava":
        from sdllm.runtime.lava_backend import run_lava_batch

        return run_lava_batch(build, prompts, n_new, granularity, progress, sampler, generations)
    if backend == "fast":
        from sdllm.runtime.fast import run_fast_batch

        return run_fast_batch(build, prompts, n_new, sampler, generations)
    from sdllm.runtime.lockstep import run_lockstep_batch

    return run_lockstep_batch(build, prompts, n_new, sampler, generations)
