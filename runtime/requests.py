"""What a run request must satisfy, checked before any work: the backend, the granularity, the
prompt's token ids, the positions against the context."""

from sdllm import arguments
from sdllm.errors import SdllmError
from sdllm.formats.build import Build

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


def check_prompt_list(prompts) -> None:
    """A batch's prompts are a non-empty list (or tuple), whatever each prompt is."""
    if not isinstance(prompts, (list, tuple)) or not prompts:
        arguments.fail("prompts", "a non-empty list of prompts", prompts)


def check_batch(build: Build, prompts, n_new: int, backend: str = "lava", granularity: str = "auto") -> None:
    """A batch: each prompt as `check_request` asks, and their sequences together within the context."""
    check_prompt_list(prompts)
    for i, p in enumerate(prompts):
        try:
            check_request(build, p, n_new, backend, granularity)
        except SdllmError as e:
            raise SdllmError(f"prompt {i + 1} of {len(prompts)}: {e}") from None
    ctx = build.config.max_seq_len
    need = sum(len(p) + n_new - 1 for p in prompts)
    if need > ctx:
        raise SdllmError(f"batch: {len(prompts)} prompts ({sum(len(p) for p in prompts)} tokens in all) + {n_new} new tokens "
                         f"each need {need} positions side by side, the context holds {ctx}")
