"""The real model on Lava, as the README promises it: SmolLM2-135M-Instruct converted with the
defaults (W4A4, and W4A8 and W8A8 with its learned rotation), compiled for Kapoho Point (W8A8,
whose 8-bit synapses need more than its 1,024 cores: Hala Point), run on
Lava's simulator (one Process per chip) for a few ordinary prompts, and checked equal — tokens and
logits — to the fast executor and the integer reference. Also prints, per prompt, the largest
residual a layer hands on (the first position's massive activations: beyond one 24-bit graded
spike, so carried in two) and the channels that needed the second piece.

    .venv/bin/python benchmarks/smollm2_lava.py [--new-tokens 2] [--settings W4A4 W4A8 W8A8]

Exits 1 if any run differs. About 30 minutes on 2 cores from an empty cache (the W4A4 default's
rotation is learned once, ~8 min; its compile ~1 min; each Lava run 20-60 s).
"""

# isort: off
import sdllm  # noqa: F401  (before torch: sdllm sets OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads)
# isort: on

import argparse
import os
import sys
import time

import numpy as np
from results_page import recorded
from shared_smollm2 import convert_cached
from shared_smollm2 import gguf as fetch_gguf

from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model
from sdllm.formats import model as modelformat
from sdllm.formats.build import read as load_build
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.corpus import CALIBRATION_WINDOWS
from sdllm.runtime.fast import run_fast
from sdllm.runtime.lava_backend import run_lava
from sdllm.tokenizer import encode

DEFAULT = "{W4A4}"
SETTINGS = {
    "W4A4": [],
    "W4A8": ["--act-bits", "8", "--rotation-from", DEFAULT],
    "W8A8": ["--weight-bits", "8", "--act-bits", "8", "--rotation-from", DEFAULT],
}
PROMPTS = ["Hello world", "The capital of France is", "def add(a, b):", "Water boils at"]
# Kapoho Point (8 chips) holds the 4-bit-weight networks; W8A8's 8-bit synapses need 1,393 cores: Hala Point's chips
TARGETS = {"W4A4": "kapoho_point", "W4A8": "kapoho_point", "W8A8": "hala_point"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--new-tokens", type=int, default=2)
    ap.add_argument("--calib-windows", type=int, default=CALIBRATION_WINDOWS)
    ap.add_argument("--cache", default=os.path.join("out", "smollm2_models"))
    ap.add_argument("--out", default=os.path.join("out", "smollm2_lava"))
    args = ap.parse_args()
    for folder in (args.cache, args.out):
        os.makedirs(folder, exist_ok=True)
    gguf = fetch_gguf()
    paths, failures = {}, 0
    print(f"SmolLM2-135M-Instruct on Lava (one Process per chip), {args.new_tokens} new tokens per prompt")
    print(f"{'setting':<6} {'prompt':<26} {'positions':>9} {'largest hand-off':>16} {'2-piece channels':>16} "
          f"{'Lava s':>7}  fast = Lava = reference")
    for name in ["W4A4"] + [s for s in args.settings if s != "W4A4"]:
        flags = [paths["W4A4"] if f == DEFAULT else f for f in SETTINGS[name]]
        paths[name], _, _ = convert_cached(gguf, flags, args.cache, args.calib_windows)
        if name not in args.settings:
            continue
        model = modelformat.load(paths[name])
        build_dir = os.path.join(args.out, name)
        emit(compile_model(model, TARGETS[name]), build_dir)
        build = load_build(build_dir)
        print(f"{name}: {TARGETS[name]}, {len(build.cores):,} cores on {len({c.chip for c in build.cores if c.chip >= 0})} chips")
        unit = next(c for c in build.cores if c.type == "neuron_unit")
        one_piece = (1 << unit.params["resid_piece_bits"]) - 1
        for text in PROMPTS:
            prompt = [int(t) for t in encode(model.tokenizer, text)]
            trace = {}
            IntegerSDLLM(model).forward(prompt, trace=trace)
            handed = np.stack([trace[f"L{i}.resid"] for i in range(model.config.n_layers - 1)])
            tokens, logits, _ = IntegerSDLLM(model).generate(prompt, args.new_tokens)
            fast = run_fast(build, prompt, args.new_tokens)
            t0 = time.time()
            lava = run_lava(build, prompt, args.new_tokens, "chip")
            seconds = time.time() - t0
            equal = all(r.tokens == tokens and np.array_equal(r.logits, logits) for r in (fast, lava))
            failures += not equal
            print(f"{name:<6} {text!r:<26} {len(logits):>9} {int(np.abs(handed).max()):>16,} "
                  f"{int((np.abs(handed) > one_piece).sum()):>16} {seconds:>7.1f}  {'EQUAL' if equal else 'DIFFERENT'}",
                  flush=True)
    print("all runs equal" if not failures else f"{failures} run(s) DIFFER")
    return 1 if failures else 0


if __name__ == "__main__":
    with recorded("smollm2_lava"):
        rc = main()
    sys.exit(rc)
