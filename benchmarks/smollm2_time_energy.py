"""Time and energy on the chip: SmolLM2-135M-Instruct converted with the defaults (W4A4, the
paper's setting), compiled for Kapoho Point once in every spike code — the paper's ternary trains
(`--code paper`), each code forced, and the compiler's choice (`--code auto`, the default).

1. Per code: timesteps per generated token (the period), the prompt's initiation interval, the
   steps to the first new token after a 64-token prompt (pipelined, and a period per position as
   the paper's schedule runs), SOPs per token (the fast executor on a held-out 64-token prompt and
   8 new tokens), the hw config's energy estimate and the 45 nm estimate; tokens and logits
   checked equal across codes (the same integers).
2. The energy account of the default against the dense model on the same tokens: FP32 (the
   paper's convention), FP16, INT8 MACs, the same network as an integer ANN, and the weights a
   dense accelerator reads per token (`sdllm.runtime.energy`, constants cited there).
3. Lava: a 32-token prompt and 8 new tokens, in one run of this script, with the paper's code and
   schedule (a period per position) against the compiler's code and the pipelined schedule;
   tokens and logits checked equal to each other and to the fast executor.
4. Batches: several prompts side by side in the pipeline (`sdllm-run --batch`, `Build.run_batch`):
   new tokens per second against the batch's size from the compiled schedule, a batch of 8 on
   the fast executor and one of 4 on Lava, each prompt checked equal to its run alone.
Targets (issue 21) printed met or missed; plot out/smollm2_time_energy.png.

    .venv/bin/python benchmarks/smollm2_time_energy.py [--skip-lava]

About 20 minutes on 2 cores with the default conversion cached (learning its rotation once: ~8
minutes more); the paper-schedule Lava run is most of it.
"""

# isort: off
import sdllm  # noqa: F401  (before torch: sdllm sets OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads)
# isort: on

import argparse
import os
import shutil
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from results_page import recorded  # noqa: E402
from shared_smollm2 import convert_cached  # noqa: E402
from shared_smollm2 import gguf as fetch_gguf  # noqa: E402

from sdllm.formats.build import read as load_build  # noqa: E402
from sdllm.models.source.corpus import CALIBRATION_WINDOWS, held_out_windows  # noqa: E402
from sdllm.runtime import energy  # noqa: E402
from sdllm.runtime.fast import run_fast, run_fast_batch  # noqa: E402
from sdllm.runtime.lava_backend import run_lava, run_lava_batch  # noqa: E402
from sdllm.schedule import Timeline  # noqa: E402

BIN = os.path.dirname(sys.executable)
TARGET = "kapoho_point"
CODES = ("paper", "bitplane", "naf", "graded", "auto")
PROMPT, NEW = 64, 8  # the fast executor's run per code
LAVA_PROMPT, LAVA_NEW = 32, 8
BATCH_PROMPT, BATCH_NEW, BATCH_SIZES = 16, 16, (1, 2, 4, 8)  # 8 x 31 positions fit the 256 of the context
LAVA_BATCH = 4
# the baseline, measured before it on this model and target with the paper's code
BASE_PERIOD, BASE_SOPS = 1478, 283.7e6


def verdict(ok: bool, value: str, target: str) -> str:
    return f"{value} (target {target}: {'met' if ok else 'MISSED'})"


def compile_code(model: str, code: str, out: str) -> tuple:
    path = os.path.join(out, f"build_{code}")
    t0 = time.time()
    subprocess.run([os.path.join(BIN, "sdllm-compile"), model, "--target", TARGET, "--code", code, "-o", path, "-q"], check=True)
    return load_build(path), time.time() - t0


def ttft(build, n_prompt: int, pipelined: bool) -> int:
    """Steps until the first new token after an n_prompt-token prompt."""
    return Timeline.of(build.schedule, n_prompt, n_prompt, pipelined).done(n_prompt - 1)


def batch_rate(build, size: int, pipelined_batch: bool = True) -> tuple:
    """(timesteps, new tokens per second at the config's step time) of `size` prompts of
    BATCH_PROMPT tokens and BATCH_NEW new tokens each: side by side, or one after another."""
    s = build.schedule
    if pipelined_batch:
        steps = Timeline.batch(s, [BATCH_PROMPT] * size, BATCH_NEW).total
    else:
        steps = size * Timeline.of(s, BATCH_PROMPT, BATCH_PROMPT + BATCH_NEW - 1).total
    return steps, size * BATCH_NEW / (steps * build.hw.timestep_us * 1e-6)


def same(a, b) -> bool:
    return a.tokens == b.tokens and np.array_equal(a.logits, b.logits)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-windows", type=int, default=CALIBRATION_WINDOWS)
    ap.add_argument("--cache", default=os.path.join("out", "smollm2_models"))
    ap.add_argument("--out", default=os.path.join("out", "smollm2_time_energy"))
    ap.add_argument("--skip-lava", action="store_true", help="only the compiled schedules and the fast executor")
    args = ap.parse_args()
    for folder in (args.cache, args.out):
        os.makedirs(folder, exist_ok=True)
    model, _, _ = convert_cached(fetch_gguf(), [], args.cache, args.calib_windows)

    builds, runs, est = {}, {}, {}
    for code in CODES:
        builds[code], seconds = compile_code(model, code, args.out)
        print(f"compiled --code {code}: {seconds:.0f} s", flush=True)
    rows = held_out_windows(builds["auto"].tokenizer, PROMPT + 1, 1)
    prompt = [int(t) for t in rows[0][:PROMPT]]
    for code, build in builds.items():
        runs[code] = run_fast(build, prompt, NEW)
        est[code] = energy.estimate(build, runs[code])
    equal = all(same(runs[c], runs["paper"]) for c in CODES)

    print(f"\nSmolLM2-135M-Instruct W4A4 (the default conversion) on {TARGET}; fast executor, a held-out "
          f"{PROMPT}-token prompt + {NEW} new tokens; tokens and logits equal in every code: {equal}")
    print(f"{'code':9}{'steps/token':>12}{'interval':>9}{'64-token TTFT':>14}{'unpipelined':>12}"
          f"{'SOPs/token':>14}{'graded':>13}{'hw uJ':>8}{'45nm uJ':>9}")
    for code, build in builds.items():
        s, e = build.schedule, est[code]
        print(f"{code:9}{s.period:>12,}{s.interval:>9,}{ttft(build, PROMPT, True):>14,}{ttft(build, PROMPT, False):>12,}"
              f"{e['sops_per_token']:>14,.0f}{e['graded_sops_per_token']:>13,.0f}{e['energy_per_token_uj']:>8.1f}"
              f"{e['sdllm_45nm_uj']:>9.1f}")
    chosen = builds["auto"].schedule.stages
    print("the compiler's codes: " + ", ".join(f"{c}: {sum(w.code == c for w in chosen.values())} stages"
                                               for c in sorted({w.code for w in chosen.values()})))

    a, p = builds["auto"], builds["paper"]
    e = est["auto"]
    print("\ntargets (issue 21; the baseline: the paper's code and schedule before it, measured on this model and target):")
    print("  timesteps per generated token: " + verdict(a.schedule.period <= BASE_PERIOD / 2, f"{a.schedule.period:,} "
          f"(paper's code now {p.schedule.period:,}, before {BASE_PERIOD:,})", f"<= {BASE_PERIOD // 2}"))
    first, base_first = ttft(a, PROMPT, True), PROMPT * BASE_PERIOD
    print(f"  steps to the first new token after {PROMPT} prompt tokens: " + verdict(
        first <= base_first / 10, f"{first:,} = {first / base_first:.4f}x {PROMPT} x {BASE_PERIOD:,}", "<= 0.1x"))
    print("  SOPs per token at identical tokens and logits: " + verdict(
        equal and e["sops_per_token"] <= BASE_SOPS / 2,
        f"{e['sops_per_token'] / 1e6:.1f} M = {e['sops_per_token'] / BASE_SOPS:.3f}x {BASE_SOPS / 1e6:.1f} M "
        f"(the paper's code on this prompt: {est['paper']['sops_per_token'] / 1e6:.1f} M)", "<= 0.5x"))
    ratio = e["sdllm_45nm_uj"] / e["dense_fp16_45nm_uj"]
    print("  45 nm energy against the dense model's FP16 MACs on the same tokens: "
          + verdict(ratio <= 0.5, f"{ratio:.3f}x (the paper's code {est['paper']['sdllm_45nm_uj'] / e['dense_fp16_45nm_uj']:.3f}x)",
                    "<= 0.5x"))
    least = min(est.values(), key=lambda x: x["sdllm_45nm_uj"])
    least_code = next(c for c in CODES if est[c] is least)
    print(f"    the least any code reaches with these integers: {least_code}, {least['sdllm_45nm_uj'] / e['dense_fp16_45nm_uj']:.3f}x; "
          f"graded spikes do the fewest ops a code can (one per non-zero value and synapse), so below 0.5x needs sparser integers")
    per_mac = e["sops_per_token"] / e["dense_macs_per_token"]
    print(f"    ({per_mac:.2f} synaptic ops per dense MAC; an op at the paper's E_AC (a 32-bit float add, 0.9 pJ) costs "
          f"0.6x an FP16 MAC (1.5 pJ), a graded one 0.73x: 0.5x needs fewer than 0.83 binary ops per MAC. "
          f"Counted as integer adds, as a chip's synapses do them: {e['sdllm_int_45nm_uj'] / e['dense_fp16_45nm_uj']:.3f}x)")

    print(f"\nenergy per token, 45 nm [Horowitz 2014 and the assumptions in sdllm/runtime/energy.py], "
          f"{e['dense_macs_per_token'] / 1e6:.1f} M dense MACs:")
    account = {
        "SDLLM, paper's code": est["paper"]["sdllm_45nm_uj"],
        "SDLLM, compiler's codes": e["sdllm_45nm_uj"],
        "the same, integer adds": e["sdllm_int_45nm_uj"],
        "dense FP32 MACs": e["dense_fp32_45nm_uj"],
        "dense FP16 MACs": e["dense_fp16_45nm_uj"],
        "dense INT8 MACs": e["dense_int8_45nm_uj"],
        "W4A4 as an integer ANN": e["integer_ann_45nm_uj"],
        "weights read from SRAM": e["weights_sram_45nm_uj"],
        "weights read from DRAM": e["weights_dram_45nm_uj"],
    }
    for name, uj in account.items():
        print(f"  {name:26}{uj:10.1f} uJ")
    print(f"  (a dense accelerator reads {e['weight_bytes_per_token'] / 1e6:.1f} MB of weights per token at batch 1; "
          f"the chip holds them in its synapses)")
    print(f"  hw config estimate ({TARGET}): {e['energy_per_token_uj']:.1f} uJ = {e['sop_energy_nj'] / 1e3:.1f} synaptic ops "
          f"+ {e['neuron_energy_nj'] / 1e3:.1f} neuron updates (NoC not counted by the fast executor)")

    lava = {}
    if not args.skip_lava:
        lava_prompt = prompt[:LAVA_PROMPT]
        for name, build, pipelined in (("paper code, a period per position", p, False),
                                       ("compiler's codes, pipelined", a, True)):
            t0 = time.time()
            r = run_lava(build, lava_prompt, LAVA_NEW, "chip", progress=True, pipelined=pipelined)
            lava[name] = (r, time.time() - t0)
            print(f"\nLava, {LAVA_PROMPT}-token prompt + {LAVA_NEW} new ({name}): {r.timesteps:,} timesteps, "
                  f"{lava[name][1]:.0f} s wall", flush=True)
        (slow, t_slow), (quick, t_quick) = lava.values()
        fast = run_fast(a, lava_prompt, LAVA_NEW)
        print(f"  tokens and logits equal to each other and to the fast executor: {same(slow, quick) and same(quick, fast)}")
        print("  Lava wall time: " + verdict(t_slow / t_quick >= 5, f"{t_slow / t_quick:.1f}x faster "
              f"({t_slow:.0f} s -> {t_quick:.0f} s; {slow.timesteps / quick.timesteps:.1f}x fewer timesteps)", ">= 5x"))

    print(f"\nbatches: prompts of {BATCH_PROMPT} tokens + {BATCH_NEW} new tokens each, side by side in the compiled "
          f"schedule (the compiler's codes) against one prompt after another:")
    print(f"{'prompts':>8}{'timesteps':>11}{'one by one':>12}{'new tokens/s':>14}{'x':>7}")
    for size in BATCH_SIZES:
        (steps, rate), (serial, serial_rate) = batch_rate(a, size), batch_rate(a, size, False)
        print(f"{size:>8}{steps:>11,}{serial:>12,}{rate:>14,.0f}{rate / serial_rate:>7.2f}")
    rows = held_out_windows(a.tokenizer, BATCH_PROMPT + 1, max(BATCH_SIZES))
    prompts = [[int(t) for t in row[:BATCH_PROMPT]] for row in rows]
    t0 = time.time()
    batch = run_fast_batch(a, prompts, BATCH_NEW)
    alone = [run_fast(a, q, BATCH_NEW) for q in prompts]
    batch_equal = all(same(r, s) and np.array_equal(r.sops_per_token(), s.sops_per_token()) for r, s in zip(batch, alone))
    print(f"  fast executor, a batch of {len(prompts)}: each prompt's tokens, logits and SOPs equal to its run alone: "
          f"{batch_equal} ({time.time() - t0:.0f} s)")
    if not args.skip_lava:
        few = [q[: LAVA_PROMPT // 4] for q in prompts[:LAVA_BATCH]]
        t0 = time.time()
        on_lava = run_lava_batch(a, few, LAVA_NEW, "chip", progress=True)
        wall = time.time() - t0
        alone = [run_fast(a, q, LAVA_NEW) for q in few]
        lava_equal = all(same(r, s) and np.array_equal(r.sops_per_token(), s.sops_per_token()) for r, s in zip(on_lava, alone))
        steps = max(r.timesteps for r in on_lava)
        serial = sum(Timeline.of(a.schedule, len(q), len(q) + LAVA_NEW - 1).total for q in few)
        print(f"  Lava, a batch of {LAVA_BATCH} prompts of {LAVA_PROMPT // 4} tokens + {LAVA_NEW} new: {steps:,} timesteps "
              f"(one after another {serial:,}: x{serial / steps:.2f}), {wall:.0f} s wall; each prompt equal to its fast "
              f"run alone (tokens, logits, SOPs): {lava_equal}")
        batch_equal = batch_equal and lava_equal

    fig, (left, right, third) = plt.subplots(1, 3, figsize=(15, 4))
    names = list(account)
    left.barh(names[::-1], [account[n] for n in names][::-1], color=["C0", "C0", "C0", "C1", "C1", "C1", "C1", "C2", "C2"][::-1])
    left.set_xscale("log")
    left.set_xlabel("uJ per token (45 nm estimate)")
    left.set_title("energy per token: SmolLM2-135M")
    lengths = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    steps_us = a.hw.timestep_us / 1e3
    for label, build, pipelined in (("paper's code, a period per position", p, False),
                                    ("paper's code, pipelined", p, True),
                                    ("compiler's codes, pipelined", a, True)):
        right.plot(lengths, [ttft(build, int(n), pipelined) * steps_us for n in lengths], marker="o", label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("prompt tokens")
    right.set_ylabel(f"ms to the first new token ({a.hw.timestep_us:g} us steps)")
    right.set_title(f"time to first token on {TARGET}")
    right.legend(fontsize=8)
    sizes = np.array(BATCH_SIZES)
    for label, batched in (("side by side (a batch)", True), ("one after another", False)):
        third.plot(sizes, [batch_rate(a, int(n), batched)[1] for n in sizes], marker="o", label=label)
    third.set_xscale("log", base=2)
    third.set_xlabel(f"prompts ({BATCH_PROMPT} tokens + {BATCH_NEW} new each)")
    third.set_ylabel(f"new tokens per second ({a.hw.timestep_us:g} us steps)")
    third.set_title("generation throughput, compiler's codes")
    third.legend(fontsize=8)
    fig.tight_layout()
    plot = os.path.join(args.out, "smollm2_time_energy.png")
    fig.savefig(plot, dpi=120)
    shutil.copyfile(plot, os.path.join(os.path.dirname(__file__), "..", "docs", "smollm2_time_energy.png"))
    print("\nplot: docs/smollm2_time_energy.png")
    if not equal or not batch_equal or (lava and not (same(*[r for r, _ in lava.values()]))):
        return 1
    return 0


if __name__ == "__main__":
    with recorded("smollm2_time_energy"):
        rc = main()
    sys.exit(rc)
