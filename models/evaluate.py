"""sdllm-eval: perplexity of the float model, the fake-quant forward and the integer reference
on held-out text (the last 10% of the stdlib's pydoc topics), plus firing statistics.

    sdllm-eval model.pt [--float FLOAT.pt] [--windows 8]
"""

import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sdllm.cli import guarded
from sdllm.models import checkpoint
from sdllm.models import fixedpoint as fx
from sdllm.models.corpus import pydoc_bytes, split, windows
from sdllm.models.fakequant import FakeQuantSDLLM
from sdllm.models.integer_ref import IntegerSDLLM


def held_out_windows(seq_len: int, n: int) -> np.ndarray:
    _, held_out = split(pydoc_bytes())
    rows = windows(held_out, seq_len)
    step = max(1, len(rows) // n)
    return rows[::step][:n]


@torch.no_grad()
def torch_perplexity(forward, rows: np.ndarray) -> float:
    x = torch.from_numpy(rows)
    logits = forward(x[:, :-1]).double()
    return math.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)).item())


def nll(logits_fx, target: int) -> float:
    """Negative log-likelihood of target under FRAC fixed-point logits."""
    z = np.asarray(logits_fx, np.float64) / (1 << fx.FRAC)
    top = z.max()
    return float(np.log(np.exp(z - top).sum()) + top - z[target])


def build_perplexity(build_dir: str, rows: np.ndarray, progress: bool = True) -> float:
    """Perplexity of the compiled network (the fast backend, teacher-forced on each window)."""
    from sdllm.runtime.build import load_build
    from sdllm.runtime.lockstep import run_fast

    build = load_build(build_dir)
    total, n = 0.0, 0
    for row in tqdm(rows, desc="compiled network", disable=None if progress else True, leave=False):
        logits = run_fast(build, [int(t) for t in row[:-1]], 1).logits
        for pos, lg in enumerate(logits):  # the integer reference's summation order: equal logits, equal result
            total += nll(lg, row[pos + 1])
            n += 1
    return math.exp(total / n)


def integer_perplexity(blob: dict, rows: np.ndarray, progress: bool = True, histogram: dict | None = None):
    """Perplexity of the integer reference, and its mean spikes per token and SOPs per token.

    histogram, if given, is filled with stage -> counts of |q| (spikes per neuron per token, 0..Q).
    """
    ref = IntegerSDLLM(blob)
    total, n, spikes, sops = 0.0, 0, 0, 0
    bar = tqdm(total=rows.shape[0] * (rows.shape[1] - 1), desc="integer reference", disable=None if progress else True, leave=False)
    for row in rows:
        ref.reset()
        for pos in range(len(row) - 1):
            logits_fx, sp = ref.step(int(row[pos]), pos)
            total += nll(logits_fx, row[pos + 1])
            n += 1
            spikes += sum(int(np.abs(v).sum()) for v in sp.values())
            if histogram is not None:
                for stage, v in sp.items():
                    counts = np.bincount(np.abs(np.asarray(v)).reshape(-1), minlength=ref.spec.timesteps + 1)
                    histogram[stage] = histogram.get(stage, 0) + counts
            sops += sum(ref.stage_sops(sp, pos).values())
            bar.update()
    bar.close()
    return math.exp(total / n), spikes / n, sops / n


def evaluate(blob: dict, float_model, n_windows: int, progress: bool = True, build_dir: str | None = None) -> dict:
    """Perplexities (float, fake-quant, integer, and the compiled build's if given), spikes,
    SOPs and the spike-count histogram on the same held-out windows."""
    seq_len = blob["config"]["max_seq_len"]
    rows = held_out_windows(seq_len, n_windows)
    out = {"tokens": int(rows.shape[0] * (rows.shape[1] - 1))}
    if float_model is not None:
        out["float"] = torch_perplexity(float_model.eval(), rows)
        out["fake_quant"] = torch_perplexity(FakeQuantSDLLM(float_model, blob), rows)
    out["histogram"] = {}
    out["integer"], out["spikes_per_token"], out["sops_per_token"] = integer_perplexity(blob, rows, progress, out["histogram"])
    if build_dir:
        out["compiled"] = build_perplexity(build_dir, rows, progress)
    return out


def main(argv=None):
    from sdllm.models.convert import DEFAULT_FLOAT

    ap = argparse.ArgumentParser(prog="sdllm-eval", description="Held-out perplexity of an SDLLM and its float model.")
    ap.add_argument("model", help="model.pt")
    ap.add_argument("--float", dest="float_path", default=DEFAULT_FLOAT, help="the float checkpoint it was converted from")
    ap.add_argument("--windows", type=int, default=8, help="held-out windows of max_seq_len bytes")
    ap.add_argument("--build", help="also the perplexity of this compiled build directory (fast backend)")
    ap.add_argument("--plot", help="where to write the spike-count histogram (default: MODEL.spikes.png)")
    args = ap.parse_args(argv)
    return guarded("sdllm-eval", lambda: report(args.model, args.float_path, args.windows, args.build, args.plot))


def report(model_path: str, float_path: str, n_windows: int, build_dir: str | None = None, plot_path: str | None = None) -> None:
    from sdllm.models.convert import load_float

    blob = checkpoint.load(model_path)
    r = evaluate(blob, load_float(float_path), n_windows, build_dir=build_dir)
    q = blob["quant"]
    print(f"held-out perplexity per byte ({r['tokens']} tokens), W{q['weight_bits']}A{q['act_bits']} KV{q['kv_bits']} theta={q['theta']}:")
    print(f"  float      {r['float']:.3f}")
    print(f"  fake-quant {r['fake_quant']:.3f}")
    print(f"  integer    {r['integer']:.3f}   (the SDLLM the compiled network runs)")
    if build_dir:
        same = "equal to the integer reference" if r["compiled"] == r["integer"] else "DIFFERENT from the integer reference"
        print(f"  compiled   {r['compiled']:.3f}   ({build_dir}, fast backend: {same})")
    print(f"  spikes per token {r['spikes_per_token']:.0f}, SOPs per token {r['sops_per_token']:.0f}")
    T = fx.qmax(q["act_bits"])
    print(f"firing per stage (spikes per input neuron per timestep over its T = {T} window; share of silent neurons):")
    for stage, counts in r["histogram"].items():
        rate = (counts * np.arange(len(counts))).sum() / (counts.sum() * T)
        print(f"  {stage:<12} rate {rate:.3f}   silent {counts[0] / counts.sum():6.1%}")
    print("  (pv's input neurons are all max_seq_len key positions, future ones included)")
    plot = plot_path or os.path.splitext(model_path)[0] + ".spikes.png"
    plot_histogram(r["histogram"], T, plot)
    print(f"plot: {plot}")


def plot_histogram(histogram: dict, T: int, path: str) -> None:
    """Spike-count histogram (how many of T steps each input neuron fires), one line per stage kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = {}
    for stage, counts in histogram.items():
        kind = stage.split(".")[-1]
        kinds[kind] = kinds.get(kind, 0) + counts
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, counts in kinds.items():
        ax.plot(np.arange(len(counts)), counts / counts.sum(), marker="o", label=kind)
    ax.set_yscale("log")
    ax.set_xlabel(f"spikes per neuron per token (of T = {T} steps)")
    ax.set_ylabel("share of input neurons")
    ax.set_title("spike-count histogram per stage kind (integer reference, held-out text)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
