"""sdllm-lm-eval: lm-evaluation-harness's own command line, with `--model sdllm` registered.

lm-eval 0.4.x resolves `--model NAME` against its registry before any other package's code runs,
and (before its `lm_eval.models` plugin entry points) imports no other package's models. This
command imports `sdllm.harness` (which registers `sdllm` with `register_model`) and then runs
the harness's `cli_evaluate` with the arguments as given: its options, task configs, caching and
result files are the harness's. An SdllmError (a bad --model_args) is one line, exit code 2.

    sdllm-lm-eval --model sdllm --model_args model=X.pt,backend=integer --tasks arc_easy
    python -m sdllm.cli.harness ...      (the same)
"""

import sys

from sdllm.cli import guarded

PROG = "sdllm-lm-eval"


def main(argv=None):
    return guarded(PROG, lambda: _evaluate(sys.argv[1:] if argv is None else list(argv)))


def _evaluate(argv: list) -> int:
    from lm_eval.__main__ import cli_evaluate

    import sdllm.harness  # noqa: F401  (registers --model sdllm)

    saved = sys.argv
    sys.argv = [PROG, *argv]  # the harness's parser reads sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
