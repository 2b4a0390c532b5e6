"""Issue 13's figures: the exact executors against torch's float forward of the same model on the
same CPU, every ratio measured in this one run (SmolLM2-135M-Instruct, W4A4 default precision).

1. Teacher-forced throughput on held-out windows of 255 tokens (tokens/s, median of --repeats,
   interleaved): torch's float forward; the fast executor (`--backend fast`, the build's tables
   folded per stage); the integer reference (`IntegerSDLLM`, the oracle). Targets: fast >= 1.0x
   float, reference >= 0.5x. The executors' logits are checked equal to each other.
2. Greedy generation after a 32-token prompt, 32 new tokens, tokens/s after the prompt: torch's
   float model with its KV cache (`Llama.generate`) against `--backend fast` with its KV cache.
   Target >= 0.5x. The fast tokens are checked equal to the integer reference's.
3. Lava, one Process per chip on Kapoho Point: ms per timestep of a 2-token prompt and one new
   token (--skip-lava to leave it out).

    .venv/bin/python benchmarks/executor_speed.py [--windows 4] [--repeats 3] [--skip-lava]

About 5 minutes on 2 cores, plus ~3 to convert SmolLM2 once (cached in out/, shared with the
other SmolLM2 benchmarks).
"""

# isort: off
import sdllm  # noqa: F401  (before torch: sdllm sets OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads, read when torch loads)
# isort: on

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from results_page import recorded
from shared_smollm2 import gguf as fetch_gguf
from shared_smollm2 import w4a4_model

from sdllm.formats import build as buildformat
from sdllm.formats import model as modelformat
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.corpus import held_out_windows
from sdllm.models.source.importers import load_source
from sdllm.runtime.fast import FoldedBuild, run_fast

BIN = os.path.dirname(sys.executable)
SEQ = 256


def ok(flag: bool) -> str:
    return "meets" if flag else "MISSES"


def smollm2(out_dir: str):
    """(gguf path, model.pt path, build directory): converted and compiled once, then reused."""
    source = fetch_gguf()
    model_path = w4a4_model(out_dir, source)
    build_path = os.path.join(out_dir, "smollm2_kapoho")
    if not os.path.isfile(os.path.join(build_path, "network.json")):
        subprocess.run([os.path.join(BIN, "sdllm-compile"), model_path, "--target", "kapoho_point", "-o", build_path, "-q"],
                       check=True)
    return source, model_path, build_path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def teacher_forced(float_model, folded, ref, rows, repeats: int) -> dict:
    n_tok = rows.shape[0] * (rows.shape[1] - 1)
    fast = folded.executor()

    def run_float():
        with torch.no_grad():
            for row in torch.from_numpy(rows):
                float_model(row[None, :-1])

    def run_exec(executor):
        def go():
            for row in rows:
                executor.reset()
                executor.forward(row[:-1])
        return go

    runners = {"torch float": run_float, "fast executor": run_exec(fast), "integer reference": run_exec(ref)}
    for fn in runners.values():  # warm-up: compilation, caches, first-touch allocations
        fn()
    seconds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            seconds[name].append(timed(fn))
    fast.reset()
    ref.reset()
    same = np.array_equal(fast.forward(rows[0][:-1])[0], ref.forward(rows[0][:-1])[0])
    return {name: n_tok / statistics.median(s) for name, s in seconds.items()}, same


def generation(float_model, build, ref, prompt, n_new: int, repeats: int) -> dict:
    folded = FoldedBuild(build)
    run_fast(build, prompt, 2, folded)  # warm-up
    float_model.generate(prompt, 2)
    fast_s, float_s = [], []
    for _ in range(repeats):
        t_prefill = timed(lambda: run_fast(build, prompt, 1, folded))
        result = None

        def fast_all():
            nonlocal result
            result = run_fast(build, prompt, n_new, folded)
        fast_s.append(max(timed(fast_all) - t_prefill, 1e-9))
        t_prefill = timed(lambda: float_model.generate(prompt, 1))
        float_s.append(max(timed(lambda: float_model.generate(prompt, n_new)) - t_prefill, 1e-9))
    tokens, _, _ = ref.generate(prompt, n_new)
    return {"torch float": (n_new - 1) / statistics.median(float_s), "fast executor": (n_new - 1) / statistics.median(fast_s),
            "same tokens": result.tokens == tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lava", action="store_true")
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    gguf, model_path, build_path = smollm2(args.out)
    model = modelformat.load(model_path)
    build = buildformat.read(build_path)
    float_model, _ = load_source(gguf, SEQ)
    float_model.eval()
    rows = held_out_windows(model.tokenizer, SEQ, args.windows)
    print(f"SmolLM2-135M-Instruct {model.quant.describe()} ({model.quant.precision()}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {rows.shape[0]} held-out windows of {SEQ - 1} tokens")

    tput, same = teacher_forced(float_model, FoldedBuild(build), IntegerSDLLM(model), rows, args.repeats)
    base = tput["torch float"]
    print("\n1. teacher-forced throughput (tokens/s, median of", args.repeats, "interleaved runs):")
    for name, v in tput.items():
        print(f"   {name:<18} {v:8.0f}   {v / base:5.2f} x float")
    print(f"   fast executor {ok(tput['fast executor'] >= base)} >= 1.0x; integer reference "
          f"{ok(tput['integer reference'] >= 0.5 * base)} >= 0.5x; fast == reference logits: {same}")

    prompt = [int(t) for t in rows[0][:32]]
    g = generation(float_model, build, IntegerSDLLM(model), prompt, 32, args.repeats)
    ratio = g["fast executor"] / g["torch float"]
    print("\n2. greedy generation, 32-token prompt, 32 new tokens (tokens/s after the prompt, KV caches on both):")
    print(f"   torch float {g['torch float']:.1f}, fast executor {g['fast executor']:.1f}: {ratio:.2f} x "
          f"({ok(ratio >= 0.5)} >= 0.5x); same tokens as the integer reference: {g['same tokens']}")

    if not args.skip_lava:
        from sdllm.runtime.lava_backend import run_lava

        lava_prompt = prompt[:2]
        runs = []
        t = timed(lambda: runs.append(run_lava(build, lava_prompt, 1, "chip")))
        steps = runs[-1].timesteps
        print(f"\n3. Lava, one Process per chip ({len({c.chip for c in build.cores})} Processes incl. the host's), "
              f"{steps:,} timesteps: {t:.0f} s, {1e3 * t / steps:.2f} ms per timestep (incl. start-up)")


if __name__ == "__main__":
    with recorded("executor_speed"):
        main()
