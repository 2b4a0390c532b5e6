"""Issue 3's figures: SmolLM2-135M-Instruct (Q4_1 GGUF) converted to SDLLMs and measured on
held-out pydoc topics (256-token windows from the last 40%).

Prints: conversion time and peak memory; perplexity of float / weight-only / fake-quant / integer
reference at W8A8, W4A8 and W4A4 against the targets; for W4A4 the per-layer fidelity, the spike
codes, the ablation table (with the W4A4 round-to-nearest ANN baseline) and the cost of each
integer-only nonlinearity; the integer reference's throughput against torch's float forward.
Writes a markdown table to --markdown (default out/smollm2_sdllm.md) and the spike histogram plot.

    .venv/bin/python benchmarks/smollm2_sdllm.py [--windows 8] [--calib-windows 16] [--quick]

About 45 minutes on 2 cores (--quick: W4A4 only, no ablation, ~12 min).
"""

import argparse
import os
import resource
import subprocess
import time

import torch

from sdllm.cli.eval import ablation_lines, code_lines, histogram_png, layer_lines
from sdllm.formats.model import QuantSpec
from sdllm.models.conversion import convert
from sdllm.models.corpus import calibration_windows, held_out_windows
from sdllm.models.evaluate import ablation, evaluate, nonlinearity_costs
from sdllm.models.importers import load_source
from sdllm.models.integer_ref import IntegerSDLLM
from sdllm.outputs import write_file

SEQ = 256
TARGETS = {(8, 8): 1.05, (4, 8): 1.5}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--calib-windows", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="W4A4 only, no ablation")
    ap.add_argument("--markdown", default=os.path.join("out", "smollm2_sdllm.md"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    here = os.path.dirname(os.path.abspath(__file__))
    gguf_path = subprocess.run([os.path.join(here, "..", "scripts", "fetch_smollm2.sh")], check=True,
                               capture_output=True, text=True).stdout.strip()
    os.makedirs(os.path.dirname(args.markdown) or ".", exist_ok=True)

    t0 = time.time()
    model, tokenizer = load_source(gguf_path, SEQ)
    t_import = time.time() - t0
    rows = held_out_windows(tokenizer, SEQ, args.windows)
    calib = torch.from_numpy(calibration_windows(tokenizer, SEQ, args.calib_windows))
    print(f"SmolLM2-135M-Instruct: import {t_import:.1f} s; held-out {rows.shape[0]} x {SEQ} tokens, "
          f"calibration {calib.shape[0]} x {SEQ} tokens")

    settings = [(4, 4)] if args.quick else [(4, 4), (4, 8), (8, 8)]
    results, blobs, conversion_peak = {}, {}, None
    for wb, ab in settings:
        spec = QuantSpec(weight_bits=wb, act_bits=ab)
        t0 = time.time()
        blob = convert(model, spec, calib, tokenizer, progress=True)
        t_conv = time.time() - t0
        conversion_peak = conversion_peak or peak_rss_gb()  # the first conversion: import + calibration + GPTQ
        blobs[(wb, ab)] = blob
        print(f"\n== W{wb}A{ab} (T = {spec.timesteps}): conversion {t_conv:.0f} s, peak memory so far {peak_rss_gb():.2f} GB")
        r = results[(wb, ab)] = evaluate(blob, model, args.windows)
        r["convert_s"] = t_conv
        print(f"  float {r['float']:.2f} | weight-only {r['weight_only']:.2f} | fake-quant {r['fake_quant']:.2f} | "
              f"integer {r['integer']:.2f} ({r['integer'] / r['float']:.3f} x float)")

    w4a4 = results[(4, 4)]
    print("\n== W4A4 (the paper's setting) in detail")
    print("\n".join(layer_lines(w4a4, 7)))
    print("\n".join(code_lines(w4a4, 4)))
    plot = os.path.join(os.path.dirname(args.markdown) or ".", "smollm2_w4a4_spikes.png")
    write_file(histogram_png(w4a4["histogram"], 7), plot)
    print(f"plot: {plot}")

    ref = IntegerSDLLM(blobs[(4, 4)])
    t0 = time.time()
    for row in rows:
        ref.reset()
        ref.forward(row[:-1])
    t_int = time.time() - t0
    t0 = time.time()
    with torch.no_grad():
        for row in torch.from_numpy(rows):
            model(row[None, :-1])
    t_float = time.time() - t0
    n_tok = rows.shape[0] * (rows.shape[1] - 1)
    print(f"throughput, teacher-forced {SEQ}-token windows: integer reference {n_tok / t_int:.0f} tokens/s, "
          f"torch float {n_tok / t_float:.0f} tokens/s: ratio {t_float / t_int:.3f}")

    costs = {}
    for setting in [(8, 8), (4, 4)] if (8, 8) in blobs else [(4, 4)]:
        costs[setting] = nonlinearity_costs(blobs[setting], rows)
        base = results[setting]["integer"]
        print(f"integer-only nonlinearities (W{setting[0]}A{setting[1]}, integer {base:.2f}): perplexity with each "
              "replaced by its float version")
        for names, ppl in costs[setting].items():
            print(f"  float {names:<28} {ppl:.2f}   fixed-point costs {base / ppl:.3f} x")

    abl = None
    if not args.quick:
        abl = ablation(blobs[(4, 4)], model, rows, calib)
        print("\n".join(ablation_lines(w4a4, abl, blobs[(4, 4)].quant)))

    print("\n== targets")
    for (wb, ab), limit in TARGETS.items():
        if (wb, ab) in results:
            ratio = results[(wb, ab)]["integer"] / results[(wb, ab)]["float"]
            print(f"  W{wb}A{ab} integer / float = {ratio:.3f} (target <= {limit}): {'MET' if ratio <= limit else 'MISSED'}")
    if abl:
        ann = [ppl for label, _, ppl, _ in abl if "ANN" in label][0]
        ok = w4a4["integer"] < ann
        print(f"  W4A4 SDLLM {w4a4['integer']:.1f} vs W4A4 RTN ANN {ann:.1f}: {'MET' if ok else 'MISSED'} "
              f"(SDLLM is {w4a4['integer'] / w4a4['float']:.2f} x float)")
    conv = max(r["convert_s"] for r in results.values())
    print(f"  conversion <= 300 s: {conv:.0f} s (slowest of the settings); peak memory <= 6 GB: {conversion_peak:.2f} GB "
          f"(import + first conversion; the whole run, holding several models, peaked at {peak_rss_gb():.2f} GB)")
    print(f"  integer reference throughput vs torch float: {t_float / t_int:.3f}")
    write_markdown(args.markdown, results, abl, costs)
    print(f"markdown: {args.markdown}")


def write_markdown(path, results, abl, costs):
    w4a4 = results[(4, 4)]
    lines = ["| SDLLM | T | float | weight-only | fake-quant | integer | integer / float | SOPs / token |",
             "|---|---|---|---|---|---|---|---|"]
    for (wb, ab), r in sorted(results.items()):
        lines.append(f"| W{wb}A{ab} | {(1 << (ab - 1)) - 1} | {r['float']:.2f} | {r['weight_only']:.2f} | {r['fake_quant']:.2f} | "
                     f"{r['integer']:.2f} | {r['integer'] / r['float']:.3f} | {r['sops_per_token'] / 1e6:.1f} M |")
    if abl:
        lines += ["", "| W4A4 ablation | T | perplexity | x float | SOPs / token |", "|---|---|---|---|---|"]
        for label, T, ppl, sops in abl:
            lines.append(f"| {label} | {T or '-'} | {ppl:.1f} | {ppl / w4a4['float']:.2f} | "
                         f"{f'{sops / 1e6:.1f} M' if sops else '-'} |")
    for (wb, ab), per in costs.items():
        base = results[(wb, ab)]["integer"]
        lines += ["", f"| W{wb}A{ab} (integer {base:.2f}), float version of | perplexity | fixed-point cost |", "|---|---|---|"]
        for names, ppl in per.items():
            lines.append(f"| {names} | {ppl:.2f} | {base / ppl:.3f} x |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
