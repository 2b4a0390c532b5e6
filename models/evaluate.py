"""sdllm-eval: perplexity of the float model, the fake-quant forward and the integer reference
on held-out text (the last 10% of the stdlib's pydoc topics), plus firing statistics.

    sdllm-eval model.pt [--float FLOAT.pt] [--windows 8]
"""

import argparse
import math
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


def integer_perplexity(blob: dict, rows: np.ndarray, progress: bool = True):
    """Perplexity of the integer reference, and its mean spikes per token and SOPs per token."""
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
            sops += sum(ref.stage_sops(sp, pos).values())
            bar.update()
    bar.close()
    return math.exp(total / n), spikes / n, sops / n


def evaluate(blob: dict, float_model, n_windows: int, progress: bool = True) -> dict:
    seq_len = blob["config"]["max_seq_len"]
    rows = held_out_windows(seq_len, n_windows)
    out = {"tokens": int(rows.shape[0] * (rows.shape[1] - 1))}
    if float_model is not None:
        out["float"] = torch_perplexity(float_model.eval(), rows)
        out["fake_quant"] = torch_perplexity(FakeQuantSDLLM(float_model, blob), rows)
    out["integer"], out["spikes_per_token"], out["sops_per_token"] = integer_perplexity(blob, rows, progress)
    return out


def main(argv=None):
    from sdllm.models.convert import DEFAULT_FLOAT

    ap = argparse.ArgumentParser(prog="sdllm-eval", description="Held-out perplexity of an SDLLM and its float model.")
    ap.add_argument("model", help="model.pt")
    ap.add_argument("--float", dest="float_path", default=DEFAULT_FLOAT, help="the float checkpoint it was converted from")
    ap.add_argument("--windows", type=int, default=8, help="held-out windows of max_seq_len bytes")
    ap.add_argument("--build", help="also the perplexity of this compiled build directory (fast backend)")
    args = ap.parse_args(argv)
    return guarded("sdllm-eval", lambda: report(args.model, args.float_path, args.windows, args.build))


def report(model_path: str, float_path: str, n_windows: int, build_dir: str | None = None) -> None:
    from sdllm.models.convert import load_float

    blob = checkpoint.load(model_path)
    r = evaluate(blob, load_float(float_path), n_windows)
    q = blob["quant"]
    print(f"held-out perplexity per byte ({r['tokens']} tokens), W{q['weight_bits']}A{q['act_bits']} KV{q['kv_bits']} theta={q['theta']}:")
    print(f"  float      {r['float']:.3f}")
    print(f"  fake-quant {r['fake_quant']:.3f}")
    print(f"  integer    {r['integer']:.3f}   (the SDLLM the compiled network runs)")
    if build_dir:
        compiled = build_perplexity(build_dir, held_out_windows(blob["config"]["max_seq_len"], n_windows))
        same = "equal to the integer reference" if compiled == r["integer"] else "DIFFERENT from the integer reference"
        print(f"  compiled   {compiled:.3f}   ({build_dir}, fast backend: {same})")
    print(f"  spikes per token {r['spikes_per_token']:.0f}, SOPs per token {r['sops_per_token']:.0f}")


if __name__ == "__main__":
    sys.exit(main())
