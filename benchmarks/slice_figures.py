"""Figures for the README: held-out perplexity of the embedded default model at several
spike widths, and simulation speed (Lava vs the single-process lockstep simulator).

    .venv/bin/python benchmarks/slice_figures.py [--skip-speed]
"""

import os
import tempfile
import time

from results_page import recorded

from sdllm import codes
from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model
from sdllm.formats.build import read as load_build
from sdllm.formats.model import QuantSpec
from sdllm.models.conversion.convert import convert
from sdllm.models.evaluation.evaluate import evaluate
from sdllm.models.source.corpus import calibration_tokens
from sdllm.models.source.importers import BYTES, default_float, load_float
from sdllm.runtime.lava_backend import run_lava
from sdllm.runtime.lockstep import run_lockstep


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-speed", action="store_true", help="perplexity table only (speed needs an idle machine)")
    args = ap.parse_args()
    model = load_float(default_float())
    calib = calibration_tokens(BYTES, model.cfg.max_seq_len, 16)
    print("held-out perplexity per byte, 8 windows of 128 bytes from the last 10% of pydoc topics")
    print(f"{'setting':<14} {'T':>4} {'float':>7} {'weight-only':>12} {'fake-quant':>11} {'integer':>8} {'int/float':>10} "
          f"{'spikes/tok':>11} {'SOPs/tok':>11}")
    blobs = {}
    for wb, ab in ((8, 8), (4, 8), (4, 6), (4, 4)):
        spec = QuantSpec(weight_bits=wb, act_bits=ab)
        sdllm_model = blobs[(wb, ab)] = convert(model, spec, calib, BYTES)
        r = evaluate(sdllm_model, model, n_windows=8, progress=False)
        print(f"W{wb}A{ab} P8 KV8  {codes.steps(codes.reference(ab), ab):>4} {r['float']:>7.3f} {r['weight_only']:>12.3f} {r['fake_quant']:>11.3f} {r['integer']:>8.3f} "
              f"{r['integer'] / r['float']:>10.3f} {r['spikes_per_token']:>11.0f} {r['sops_per_token']:>11,.0f}")

    if args.skip_speed:
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "build")
        emit(compile_model(blobs[(4, 4)], "loihi2"), out)
        build = load_build(out)
        prompt = list(b"The if statement")
        runners = (
            ("lava, one process per core", lambda b, p, n: run_lava(b, p, n, "core")),
            ("lava, one process per chip", lambda b, p, n: run_lava(b, p, n, "chip")),
            ("lockstep, one process", run_lockstep),
        )
        ms = {}
        print(f"\nsimulation speed, W4A4 build ({len(build.cores)} cores incl. the host), 8 new tokens, wall time incl. start-up:")
        for name, fn in runners:
            t0 = time.time()
            r = fn(build, prompt, 8)
            wall = time.time() - t0
            ms[name] = 1e3 * wall / r.timesteps
            print(f"  {name:<28} {r.timesteps} steps: {wall:5.1f} s, {ms[name]:.2f} ms per step")
        print(f"  per-chip vs per-core Lava graph: {ms[runners[0][0]] / ms[runners[1][0]]:.1f}x fewer ms per step")


if __name__ == "__main__":
    with recorded("slice_figures"):
        main()
