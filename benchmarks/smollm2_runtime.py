"""Issue 5's figures: the compiled network run on the simulator.

1. Lava graph granularity on the demo model (the embedded default model, W4A4): one Process per
   layer stage — each stage of each decoder layer, each neuron unit and the host its own
   Process, as a stock Lava network has one Process per layer — against one fused Process per
   chip; ms per timestep, median of --repeats runs each, interleaved (target >= 5x fewer).
2. SmolLM2-135M-Instruct W4A4 compiled for Kapoho Point (8 chips) and run on Lava, one Process
   per chip: a 2-token prompt and one generated token (target <= 5 min), checked equal — tokens,
   logits, per-core SOPs — to the fast executor, and tokens and logits to the integer reference.
3. Fast executor throughput against torch's float forward of the same model on the same CPU,
   teacher-forced on held-out 256-token windows (target >= 0.3x).
4. Energy and latency per token of the Lava run (SOPs, neuron updates, NoC hops, chip crossings
   from the config) with the 45 nm estimate and the dense model's MACs; firing rate per layer
   and the spike-count histogram over a held-out window: out/smollm2_runtime.png.

    .venv/bin/python benchmarks/smollm2_runtime.py [--windows 8] [--repeats 3]

About 15 minutes on 2 cores (+3 min to convert SmolLM2 once, shared with compile_scale.py).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from results_page import recorded  # noqa: E402
from shared_smollm2 import gguf as fetch_gguf  # noqa: E402
from shared_smollm2 import w4a4_model  # noqa: E402

from sdllm import tokenizer  # noqa: E402
from sdllm.compiler.emit import emit  # noqa: E402
from sdllm.compiler.pipeline import compile_model  # noqa: E402
from sdllm.formats import model as modelformat  # noqa: E402
from sdllm.formats.build import read as load_build  # noqa: E402
from sdllm.formats.model import QuantSpec  # noqa: E402
from sdllm.models.conversion.convert import convert  # noqa: E402
from sdllm.models.integer.reference import IntegerSDLLM  # noqa: E402
from sdllm.models.source.corpus import (
    calibration_tokens,  # noqa: E402
    held_out_windows,  # noqa: E402
)
from sdllm.models.source.importers import BYTES, default_float, load_float, load_source  # noqa: E402
from sdllm.runtime import energy  # noqa: E402
from sdllm.runtime.fast import FoldedBuild, run_fast  # noqa: E402
from sdllm.runtime.lava_backend import run_lava  # noqa: E402

BIN = os.path.dirname(sys.executable)
SEQ = 256


def ok(flag: bool) -> str:
    return "meets" if flag else "MISSES"


def granularity(out_dir: str, repeats: int) -> float:
    blob = convert(load_float(default_float()), QuantSpec(), calibration_tokens(BYTES, 128, 4), BYTES)
    path = os.path.join(out_dir, "demo_build")
    emit(compile_model(blob, "loihi2"), path)
    build = load_build(path)
    prompt, ms = list(b"The if statement"), {"core": [], "chip": []}
    for _ in range(repeats):
        for g in ms:
            t0 = time.time()
            r = run_lava(build, prompt, 8, g)
            ms[g].append(1e3 * (time.time() - t0) / r.timesteps)
    core, chip = statistics.median(ms["core"]), statistics.median(ms["chip"])
    n_core = sum(1 for _ in build.cores)
    print(f"1. demo model ({n_core} cores, {build.schedule.period} timesteps per token), Lava, wall incl. start-up, median of {repeats}:")
    print(f"   one Process per layer stage ({n_core} Processes): {core:.2f} ms per timestep {[round(v, 2) for v in ms['core']]}")
    print(f"   one fused Process per chip (1 Process):      {chip:.2f} ms per timestep {[round(v, 2) for v in ms['chip']]}")
    print(f"   {core / chip:.1f}x fewer ms per timestep (target >= 5x: {ok(core / chip >= 5)})")
    return core / chip


def smollm2(out_dir: str):
    source = fetch_gguf()
    model_path = w4a4_model(out_dir, source)
    build_path = os.path.join(out_dir, "smollm2_kapoho")
    subprocess.run([os.path.join(BIN, "sdllm-compile"), model_path, "--target", "kapoho_point", "-o", build_path, "-q"], check=True)
    return source, model_path, load_build(build_path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    granularity(args.out, args.repeats)

    gguf, model_path, build = smollm2(args.out)
    prompt = tokenizer.encode(build.tokenizer, "The if")
    t0 = time.time()
    lava = run_lava(build, prompt, 1, "chip", progress=True)
    wall = time.time() - t0
    fast = run_fast(build, prompt, 1)
    blob = modelformat.load(model_path)
    tokens, logits, _ = IntegerSDLLM(blob).generate(prompt, 1)
    same_fast = lava.tokens == fast.tokens and np.array_equal(lava.logits, fast.logits) and \
        {k: v.tolist() for k, v in lava.core_sops.items()} == {k: v.tolist() for k, v in fast.core_sops.items()}
    same_ref = lava.tokens == tokens and np.array_equal(lava.logits, logits)
    print(f"\n2. SmolLM2-135M W4A4 on Lava, Kapoho Point ({sum(c.span for c in build.cores if c.type != 'host_io')} cores, 8 chip Processes): prompt "
          f"{len(prompt)} tokens + 1 generated = {lava.timesteps:,} timesteps in {wall:.0f} s "
          f"({1e3 * wall / lava.timesteps:.1f} ms per timestep); target <= 300 s: {ok(wall <= 300)}")
    print(f"   generated {tokenizer.decode(build.tokenizer, lava.tokens[len(prompt):])!r}; equal to the fast executor "
          f"(tokens, logits, per-core SOPs): {same_fast}; to the integer reference (tokens, logits): {same_ref}")

    est = energy.estimate(build, lava)
    print("\n4. per token (Lava run; energy from hw_configs, an estimate):")
    print(f"   {est['sops_per_token']:,.0f} SOPs, {est['neuron_updates_per_token']:,} neuron updates, "
          f"{est['packets_per_token']:,.0f} packets, {est['packet_hops_per_token']:,.0f} packet-hops, "
          f"{est['chip_crossings_per_token']:,.0f} chip crossings")
    print(f"   energy {est['energy_per_token_uj']:.1f} uJ = {est['sop_energy_nj'] / 1e3:.1f} SOPs + {est['neuron_energy_nj'] / 1e3:.1f} "
          f"neuron updates + {est['noc_energy_nj'] / 1e3:.1f} NoC; latency {est['latency_per_token_ms']:.1f} ms "
          f"({build.schedule.period} timesteps)")
    print(f"   45 nm estimate: SDLLM {est['sdllm_45nm_uj']:.0f} uJ ({est['binary_sops_per_token']:,.0f} binary SOPs, "
          f"{est['graded_sops_per_token']:,.0f} graded) vs dense {est['dense_macs_per_token']:,.0f} MACs: "
          f"FP32 {est['dense_fp32_45nm_uj']:.0f} uJ, FP16 {est['dense_fp16_45nm_uj']:.0f} uJ (benchmarks/smollm2_time_energy.py: the whole account)")

    rows = held_out_windows(build.tokenizer, SEQ, args.windows)
    folded = FoldedBuild(build)
    folded.executor()  # folding and the executor's tables: made once, not timed
    float_model, _ = load_source(gguf, SEQ)
    with torch.no_grad():
        float_model(torch.from_numpy(rows[:1, :-1].astype(np.int64)))  # warm-up
        t0 = time.time()
        for row in rows:
            float_model(torch.from_numpy(row[None, :-1].astype(np.int64)))
        t_torch = time.time() - t0
    t0 = time.time()
    for row in rows:
        run_fast(build, [int(t) for t in row[:-1]], 1, folded)
    t_fast = time.time() - t0
    n = len(rows) * (SEQ - 1)
    print(f"\n3. {len(rows)} held-out windows of {SEQ - 1} tokens: torch float forward {n / t_torch:.0f} tokens/s, "
          f"fast executor {n / t_fast:.0f} tokens/s: {t_torch / t_fast:.2f}x (target >= 0.3x: {ok(t_torch / t_fast >= 0.3)})")

    ref = IntegerSDLLM(blob)
    _, spikes = ref.forward(rows[0][:-1])
    T = build.schedule.timesteps_per_spike_train
    layers = build.config.n_layers
    n = len(rows[0]) - 1
    causal = np.arange(build.config.max_seq_len) < np.arange(1, n + 1)[:, None]  # P·V inputs of keys so far
    # spikes each input sends in its window, in the code the compiler chose for it
    events = {k: ref.spike_events(k, v, build.schedule.stages[k].code) for k, v in spikes.items()}
    per_stage = {k: v.transpose(1, 0, 2)[:, causal].reshape(-1) if k.endswith(".pv") else v.reshape(-1)
                 for k, v in events.items()}
    window = {k: build.schedule.stages[k].steps for k in per_stage}
    rates = [np.mean(np.concatenate([per_stage[f"L{i}.{k}"] / window[f"L{i}.{k}"]
                                     for k in ("qkv", "qk", "pv", "o", "gate_up", "down")])) for i in range(layers)]
    counts = np.concatenate(list(per_stage.values()))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.bar(range(layers), rates)
    a.set_xlabel("layer")
    a.set_ylabel("spikes per neuron per timestep")
    a.set_title("firing rate per layer (SmolLM2 W4A4)")
    b.bar(range(T + 1), np.bincount(counts, minlength=T + 1)[: T + 1] / counts.size)
    b.set_xlabel(f"spikes per neuron per token (T = {T})")
    b.set_ylabel("share of neurons")
    b.set_title("spike-count histogram")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "smollm2_runtime.png"), dpi=120)
    print(f"   firing rate per layer {min(rates):.3f}..{max(rates):.3f} spikes per neuron per timestep; "
          f"{100 * np.mean(counts == 0):.1f}% of neurons silent; plot {os.path.join(args.out, 'smollm2_runtime.png')}")


if __name__ == "__main__":
    with recorded("smollm2_runtime"):
        main()
