"""sdllm-eval: what spiking costs, measured on held-out text.

For an SDLLM (model.pt) and the float model it came from, on held-out windows of the stdlib's
pydoc topics (`sdllm.models.corpus`): perplexity of the float model, the weight-only quantised
model, the fake-quant forward and the integer reference (what the chip runs), and with
--build the compiled network's; per layer, the cosine similarity between every float
activation and the spike counts that replace it and the KL divergence of the attention
distributions; firing rates, the spike-count histogram (a plot), SOPs per token; the cost of
each spike code (`sdllm.models.encodings`); with --ablation the table of γ-SQP's parts and the
round-to-nearest ANN baseline; with --nonlinearities the cost of each integer-only
nonlinearity against its float version.

    sdllm-eval model.pt [--float SRC] [--windows 8] [--build DIR] [--ablation] [--nonlinearities]
"""

import argparse
import dataclasses
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sdllm.cli import guarded
from sdllm.errors import SdllmError
from sdllm.models import checkpoint, encodings
from sdllm.models import fixedpoint as fx
from sdllm.models.calibration import record_activations
from sdllm.models.corpus import calibration_windows, held_out_windows
from sdllm.models.fakequant import FakeQuantSDLLM
from sdllm.models.float_ops import NONLINEARITIES
from sdllm.models.integer_ref import IntegerSDLLM
from sdllm.models.rotation import prepare
from sdllm.models.sdllm import QuantSpec, convert, spec_of
from sdllm.models.units import causal

FIDELITY_POINTS = {"qkv": "qkv", "qk": "q", "pv": "p", "o": "o", "gate_up": "gate_up", "down": "down"}


def _progress(items, desc: str, progress: bool):
    return tqdm(items, desc=desc, disable=None if progress else True, leave=False)


@torch.no_grad()
def torch_perplexity(forward, rows: np.ndarray) -> float:
    total = 0.0
    for row in torch.from_numpy(rows):
        logits = forward(row[None, :-1])[0].double()
        total += F.cross_entropy(logits, row[1:], reduction="sum").item()
    return math.exp(total / (rows.shape[0] * (rows.shape[1] - 1)))


def nll(logits_fx, targets):
    """Negative log-likelihood of each target under FRAC fixed-point logits (tokens, vocab)."""
    z = np.asarray(logits_fx, np.float64) / (1 << fx.FRAC)
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[..., 0]
    return lse - np.take_along_axis(z, np.asarray(targets)[..., None], -1)[..., 0]


def _cosine_rows(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), 0.0)


def _kl(p, q):
    """KL(p || q) over the last axis, 0·log 0 = 0."""
    ratio = np.where(p > 0, p / np.where(q > 0, q, 1), 1.0)
    return np.where(p > 0, p * np.log(ratio), 0.0).sum(-1)


class Tally:
    """Sums over held-out tokens: NLL, spikes, SOPs per code, the spike-count histogram and
    the float-vs-spike fidelity figures."""

    def __init__(self):
        self.tokens = 0
        self.nll = 0.0
        self.spikes, self.sops, self.histogram = {}, {}, {}
        self.code_spikes, self.code_sops = {}, {}
        self.cos, self.attn_kl, self.logit_kl = {}, {}, 0.0

    @staticmethod
    def add(d, key, value):
        d[key] = d.get(key, 0) + value

    def as_dict(self, q_max: int) -> dict:
        n = self.tokens
        firing = {}
        for stage, counts in self.histogram.items():
            firing[stage] = float((counts * np.arange(len(counts))).sum() / (counts.sum() * q_max))
        return {
            "tokens": n,
            "integer": math.exp(self.nll / n),
            "spikes_per_token": sum(self.spikes.values()) / n,
            "sops_per_token": sum(self.sops.values()) / n,
            "sops_per_stage": {k: v / n for k, v in self.sops.items()},
            "firing": firing,
            "histogram": self.histogram,
            "codes": {c: {"spikes_per_token": self.code_spikes[c] / n, "sops_per_token": self.code_sops[c] / n}
                      for c in self.code_spikes},
            "cosine": {k: v / n for k, v in self.cos.items()},
            "attention_kl": {k: v / n for k, v in self.attn_kl.items()},
            "logits_kl": self.logit_kl / n if self.cos else None,
        }


def _fanouts(ref, stage, pos):
    """Per-axon fan-out of each input of a stage, (tokens, n)."""
    c = ref.cfg
    if stage.endswith(".qk"):
        return np.repeat((pos + 1)[:, None], c.n_heads * c.head_dim, axis=1)
    if stage.endswith(".pv"):
        return np.full((len(pos), c.n_heads * c.max_seq_len), c.head_dim)
    return np.broadcast_to(ref.fanout[stage], (len(pos), len(ref.fanout[stage])))


def integer_scores(blob: dict, rows: np.ndarray, prepared=None, float_ops=(), progress: bool = True) -> dict:
    """Teacher-forced integer reference on each window: perplexity, spikes, SOPs (per spike code),
    the histogram, and — given the prepared float model — cosine and KL against it."""
    ref = IntegerSDLLM(blob, float_ops)
    q_max, bits = ref.spec.timesteps, ref.spec.act_bits
    t = Tally()
    for row in _progress(rows, "integer reference", progress):
        ref.reset()
        trace = {}
        logits, spikes = ref.forward(row[:-1], 0, trace)
        pos = np.arange(len(row) - 1)
        t.tokens += len(pos)
        t.nll += float(nll(logits, row[1:]).sum())
        mask = causal(ref.cfg.max_seq_len, pos)
        for stage, q in spikes.items():
            a = np.abs(q)
            live = a[np.broadcast_to(mask, a.shape)] if stage.endswith(".pv") else a.reshape(-1)
            t.add(t.histogram, stage, np.bincount(live, minlength=q_max + 1))
            t.add(t.spikes, stage, int(a.sum()))
            fan = _fanouts(ref, stage, pos)
            flat = q.reshape(len(pos), -1)
            for name, code in encodings.CODES.items():
                # P·V's probabilities are unsigned: every code sends them as a plain count
                n = np.abs(flat) if stage.endswith(".pv") else code.spikes(flat, bits)
                t.add(t.code_spikes, name, int(n.sum()))
                t.add(t.code_sops, name, int((n * fan).sum()))
        for stage, s in ref.stage_sops(spikes, pos).items():
            t.add(t.sops, stage, int(s.sum()))
        if prepared is not None:
            _fidelity(t, prepared, row, spikes, trace, logits)
    return t.as_dict(q_max)


@torch.no_grad()
def _fidelity(t: Tally, prepared, row, spikes, trace, logits):
    acts = record_activations(prepared, torch.from_numpy(row[None, :-1]), points=tuple(FIDELITY_POINTS.values()) + ("head",))
    float_logits = prepared(torch.from_numpy(row[None, :-1]))[0].double()
    n = len(row) - 1
    for stage, q in spikes.items():
        layer, kind = stage.split(".") if "." in stage else ("", stage)
        x = acts[f"{layer}.{FIDELITY_POINTS[kind]}" if layer else "head"].double().numpy()
        q = q[:, :, :n] if kind == "pv" else q.reshape(x.shape)
        t.add(t.cos, stage, float(_cosine_rows(x, q).reshape(n, -1).mean(-1).sum()))
    for key, (p, _, _) in ((k, v) for k, v in trace.items() if k.endswith(".attn")):
        layer = key.split(".")[0]
        p_float = acts[f"{layer}.p"].double().numpy()  # (tokens, heads, tokens)
        p_int = p[:, :, :n].astype(np.float64)
        p_int = p_int / np.maximum(p_int.sum(-1, keepdims=True), 1)
        t.add(t.attn_kl, layer, float(_kl(p_int, p_float).mean(-1).sum()))
    lp_float = F.log_softmax(float_logits, -1).numpy()
    lp_int = F.log_softmax(torch.from_numpy(logits / (1 << fx.FRAC)), -1).numpy()
    t.logit_kl += float((np.exp(lp_float) * (lp_float - lp_int)).sum())


def build_perplexity(build_dir: str, rows: np.ndarray, progress: bool = True) -> float:
    """Perplexity of the compiled network (the fast backend, teacher-forced on each window)."""
    from sdllm.runtime.build import load_build
    from sdllm.runtime.fast import FoldedBuild, run_fast

    build = load_build(build_dir)
    folded = FoldedBuild(build)
    total = 0.0
    for row in _progress(rows, "compiled network", progress):
        logits = np.asarray(run_fast(build, [int(t) for t in row[:-1]], 1, folded).logits)
        total += float(nll(logits, row[1:]).sum())
    return math.exp(total / (rows.shape[0] * (rows.shape[1] - 1)))


def evaluation_windows(blob: dict, n_windows: int) -> np.ndarray:
    return held_out_windows(blob["tokenizer"], blob["config"]["max_seq_len"], n_windows)


def evaluate(blob: dict, float_model, n_windows: int, progress: bool = True, build_dir: str | None = None) -> dict:
    """Perplexities (float, weight-only, fake-quant, integer, and the compiled build's if given),
    spikes, SOPs, fidelity and the spike-count histogram on the same held-out windows."""
    rows = evaluation_windows(blob, n_windows)
    out = {}
    prepared = None
    if float_model is not None:
        spec = spec_of(blob)
        prepared = prepare(float_model.eval(), spec.rotate, spec.seed)
        out["float"] = torch_perplexity(float_model.eval(), rows)
        out["weight_only"] = torch_perplexity(FakeQuantSDLLM(float_model, blob, quantize_activations=False), rows)
        out["fake_quant"] = torch_perplexity(FakeQuantSDLLM(float_model, blob), rows)
    out.update(integer_scores(blob, rows, prepared, progress=progress))
    if build_dir:
        out["compiled"] = build_perplexity(build_dir, rows, progress)
    return out


def ablation_specs(spec: QuantSpec) -> list:
    """(label, spec, what is measured, spike code) rows: each part of γ-SQP taken away, one at a time."""
    rows = [
        ("no rotation", dataclasses.replace(spec, rotate=False), "integer", "ternary"),
        ("γ = 1 (max scaling)", dataclasses.replace(spec, calibrate_gamma=False), "integer", "ternary"),
        ("RTN weights (no GPTQ)", dataclasses.replace(spec, gptq=False), "integer", "ternary"),
    ]
    if spec.act_bits > 2:
        rows.append((f"unsigned count code within T = {spec.timesteps} ({spec.act_bits - 1}-bit values)",
                     dataclasses.replace(spec, act_bits=spec.act_bits - 1), "integer", "unsigned"))
    rows.append(("no dead zone (θ = 0)", dataclasses.replace(spec, theta=0), "integer", "ternary") if spec.theta
                else ("dead zone θ = 1", dataclasses.replace(spec, theta=1), "integer", "ternary"))
    ann = dataclasses.replace(spec, rotate=False, gptq=False, calibrate_gamma=False, theta=0)
    rows.append((f"W{spec.weight_bits}A{spec.act_bits} round-to-nearest ANN (no rotation, max scaling)", ann, "fake_quant", None))
    return rows


def ablation(blob: dict, float_model, rows: np.ndarray, calib, progress: bool = True) -> list:
    """[(label, T, perplexity, SOPs per token or None)] for the ablation rows, on `rows`; T and
    SOPs are those of the row's spike code."""
    spec = spec_of(blob)
    out = []
    for label, variant, measure, code in _progress(ablation_specs(spec), "ablation", progress):
        if variant.theta >= variant.timesteps:
            continue
        vblob = convert(float_model, variant, calib)
        vblob["tokenizer"] = blob["tokenizer"]
        if measure == "fake_quant":
            out.append((label, None, torch_perplexity(FakeQuantSDLLM(float_model, vblob), rows), None))
        else:
            r = integer_scores(vblob, rows, progress=progress)
            steps = encodings.CODES[code].timesteps(variant.act_bits)
            out.append((label, steps, r["integer"], r["codes"][code]["sops_per_token"]))
    return out


def nonlinearity_costs(blob: dict, rows: np.ndarray, progress: bool = True) -> dict:
    """Integer-reference perplexity with each integer-only nonlinearity replaced by its float version."""
    out = {}
    for names in [(n,) for n in NONLINEARITIES] + [NONLINEARITIES]:
        out["+".join(names)] = integer_scores(blob, rows, float_ops=names, progress=progress)["integer"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sdllm-eval", description="What spiking costs: an SDLLM against its float model on held-out text.")
    ap.add_argument("model", help="model.pt")
    ap.add_argument("--float", dest="float_path", help="the float model it was converted from: our float .pt, a Hugging Face "
                    "directory or a .gguf (default: the embedded default model)")
    ap.add_argument("--windows", type=int, default=8, help="held-out windows of max_seq_len tokens")
    ap.add_argument("--build", help="also the perplexity of this compiled build directory (fast backend)")
    ap.add_argument("--plot", help="where to write the spike-count histogram (default: MODEL.spikes.png)")
    ap.add_argument("--ablation", action="store_true", help="convert and score the ablation variants (slow on big models)")
    ap.add_argument("--nonlinearities", action="store_true", help="cost of each integer-only nonlinearity vs float")
    ap.add_argument("--calib-windows", type=int, default=16, help="calibration windows for the ablation's conversions")
    args = ap.parse_args(argv)
    return guarded("sdllm-eval", lambda: report(args))


def report(args) -> None:
    from sdllm.models.convert import load_source

    if args.windows < 1:
        raise SdllmError(f"--windows: must be at least 1, got {args.windows}")
    blob = checkpoint.load(args.model)
    float_model, _ = load_source(args.float_path, blob["config"]["max_seq_len"])
    r = evaluate(blob, float_model, args.windows, build_dir=args.build)
    q = blob["quant"]
    T = fx.qmax(q["act_bits"])
    print(f"held-out perplexity ({r['tokens']} tokens), W{q['weight_bits']}A{q['act_bits']} KV{q['kv_bits']} θ={q['theta']}, "
          f"rotation {'on' if q['rotate'] else 'off'}, {'GPTQ' if q['gptq'] else 'RTN'} weights, "
          f"γ {'calibrated' if q['calibrate_gamma'] else '= 1'}:")
    print(f"  float        {r['float']:.3f}")
    print(f"  weight-only  {r['weight_only']:.3f}   (W{q['weight_bits']}, float activations)")
    print(f"  fake-quant   {r['fake_quant']:.3f}")
    print(f"  integer      {r['integer']:.3f}   (the SDLLM the compiled network runs; {r['integer'] / r['float']:.3f} x float)")
    if args.build:
        same = "equal to the integer reference" if r["compiled"] == r["integer"] else "DIFFERENT from the integer reference"
        print(f"  compiled     {r['compiled']:.3f}   ({args.build}, fast backend: {same})")
    print(f"  logits KL(float || integer) {r['logits_kl']:.4f} nats per token")
    print(f"spikes per token {r['spikes_per_token']:,.0f}, SOPs per token {r['sops_per_token']:,.0f}")
    print_layers(r, T)
    print_codes(r, q["act_bits"])
    plot = args.plot or os.path.splitext(args.model)[0] + ".spikes.png"
    plot_histogram(r["histogram"], T, plot)
    print(f"plot: {plot}")
    rows = evaluation_windows(blob, args.windows)
    if args.nonlinearities:
        print("integer-only nonlinearities: perplexity with each replaced by its float version")
        print(f"  {'all fixed-point':<28} {r['integer']:.3f}")
        for names, ppl in nonlinearity_costs(blob, rows).items():
            print(f"  {'float ' + names:<28} {ppl:.3f}   (cost of the fixed-point version: {r['integer'] / ppl:.3f} x)")
    if args.ablation:
        calib = torch.from_numpy(calibration_windows(blob["tokenizer"], blob["config"]["max_seq_len"], args.calib_windows))
        print_ablation(r, ablation(blob, float_model, rows, calib), q)


def print_layers(r: dict, T: int) -> None:
    print(f"per stage: cosine(float activation, spike counts), firing rate (spikes per neuron per step of T = {T}), silent share")
    for stage, cos in r["cosine"].items() if r["cosine"] else ((s, None) for s in r["firing"]):
        counts = r["histogram"][stage]
        c = f"{cos:6.3f}" if cos is not None else "     -"
        kl = r["attention_kl"].get(stage.split(".")[0]) if stage.endswith(".pv") else None
        extra = f"   attention KL(integer || float) {kl:.4f}" if kl is not None else ""
        print(f"  {stage:<12} cos {c}   rate {r['firing'][stage]:.3f}   silent {counts[0] / counts.sum():6.1%}{extra}")


def print_codes(r: dict, bits: int) -> None:
    print(f"spike codes for these {bits}-bit activations (same integers, so the same perplexity; P·V's unsigned "
          "probabilities go as counts in every code):")
    print(f"  {'code':<10} {'T':>4} {'spikes/token':>14} {'SOPs/token':>14}  synapse op")
    for name, code in encodings.CODES.items():
        c = r["codes"][name]
        op = "add" if code.adds_only else "multiply-accumulate"
        print(f"  {name:<10} {code.timesteps(bits):>4} {c['spikes_per_token']:>14,.0f} {c['sops_per_token']:>14,.0f}  {op}")


def print_ablation(r: dict, rows: list, q: dict) -> None:
    print(f"ablation (W{q['weight_bits']}A{q['act_bits']}, same held-out windows):")
    print(f"  {'model':<62} {'T':>4} {'perplexity':>11} {'x float':>8} {'SOPs/token':>13}")
    base = [("float", None, r["float"], None), (f"weight-only W{q['weight_bits']} (float activations)", None, r["weight_only"], None),
            ("SDLLM (this model, integer reference)", fx.qmax(q["act_bits"]), r["integer"], r["sops_per_token"])]
    for label, T, ppl, sops in base + rows:
        t = f"{T:>4}" if T else "   -"
        s = f"{sops:>13,.0f}" if sops else "            -"
        print(f"  {label:<62} {t} {ppl:>11.3f} {ppl / r['float']:>8.3f} {s}")


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
