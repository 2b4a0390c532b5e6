"""sdllm-eval: what spiking costs, measured on held-out text.

    sdllm-eval model.pt [--float SRC] [--windows 8] [--build DIR] [--ablation] [--nonlinearities]

Prints perplexities (float, weight-only, fake-quant, integer, and with --build the compiled
network's), per-stage cosine and attention KL against float, firing rates, SOPs per spike code,
the ablation table and the cost of each integer-only nonlinearity (`sdllm.models.evaluate`),
and plots the spike-count histogram.
"""

import argparse
import os
import sys

from sdllm import outputs, resources, stages
from sdllm.cli import guarded
from sdllm.errors import SdllmError


def main(argv=None):
    return guarded("sdllm-eval", lambda: report(_args(argv)))


def _args(argv):
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
    return ap.parse_args(argv)


def report(args) -> None:
    from sdllm.formats import build as buildformat
    from sdllm.formats import model as modelformat
    from sdllm.formats.model import qmax
    from sdllm.models.corpus import calibration_tokens
    from sdllm.models.evaluate import ablation, evaluate, evaluation_windows, nonlinearity_costs
    from sdllm.models.importers import load_source

    if args.windows < 1:
        raise SdllmError(f"--windows: must be at least 1, got {args.windows}")
    plot = args.plot or os.path.splitext(args.model)[0] + ".spikes.png"
    outputs.check_file(plot, "--plot")  # before the evaluation, not after
    model = modelformat.load(args.model)
    resources.require_memory(resources.model_bytes(model.config), args.model)  # the integer reference's int64 weights
    build = buildformat.read(args.build) if args.build else None
    float_model, _ = load_source(args.float_path, model.config.max_seq_len)
    r = evaluate(model, float_model, args.windows)
    rows = evaluation_windows(model, args.windows)
    if build is not None:
        from sdllm.runtime.fast import build_perplexity

        r["compiled"] = build_perplexity(build, rows)
    q = model.quant
    T = qmax(q.act_bits)
    print(f"held-out perplexity ({r['tokens']} tokens), W{q.weight_bits}A{q.act_bits} KV{q.kv_bits} θ={q.theta}, "
          f"rotation {'on' if q.rotate else 'off'}, {'GPTQ' if q.gptq else 'RTN'} weights, "
          f"γ {'calibrated' if q.calibrate_gamma else '= 1'}:")
    print(f"  float        {r['float']:.3f}")
    print(f"  weight-only  {r['weight_only']:.3f}   (W{q.weight_bits}, float activations)")
    print(f"  fake-quant   {r['fake_quant']:.3f}")
    print(f"  integer      {r['integer']:.3f}   (the SDLLM the compiled network runs; {r['integer'] / r['float']:.3f} x float)")
    if build is not None:
        same = "equal to the integer reference" if r["compiled"] == r["integer"] else "DIFFERENT from the integer reference"
        print(f"  compiled     {r['compiled']:.3f}   ({args.build}, fast backend: {same})")
    print(f"  logits KL(float || integer) {r['logits_kl']:.4f} nats per token")
    print(f"spikes per token {r['spikes_per_token']:,.0f}, SOPs per token {r['sops_per_token']:,.0f}")
    print("\n".join(layer_lines(r, T)))
    print("\n".join(code_lines(r, q.act_bits)))
    outputs.write_file(histogram_png(r["histogram"], T), plot, "--plot")
    print(f"plot: {plot}")
    if args.nonlinearities:
        print("integer-only nonlinearities: perplexity with each replaced by its float version")
        print(f"  {'all fixed-point':<28} {r['integer']:.3f}")
        for names, ppl in nonlinearity_costs(model, rows).items():
            print(f"  {'float ' + names:<28} {ppl:.3f}   (cost of the fixed-point version: {r['integer'] / ppl:.3f} x)")
    if args.ablation:
        calib = calibration_tokens(model.tokenizer, model.config.max_seq_len, args.calib_windows)
        print("\n".join(ablation_lines(r, ablation(model, float_model, rows, calib), q)))


def layer_lines(r: dict, T: int) -> list:
    lines = [f"per stage: cosine(float activation, spike counts), firing rate (spikes per neuron per step of T = {T}), silent share"]
    for stage, cos in r["cosine"].items() if r["cosine"] else ((s, None) for s in r["firing"]):
        counts = r["histogram"][stage]
        c = f"{cos:6.3f}" if cos is not None else "     -"
        kl = r["attention_kl"].get(stage.split(".")[0]) if stages.stage_of(stage).kind is stages.NodeKind.KV_PV else None
        extra = f"   attention KL(integer || float) {kl:.4f}" if kl is not None else ""
        lines.append(f"  {stage:<12} cos {c}   rate {r['firing'][stage]:.3f}   silent {counts[0] / counts.sum():6.1%}{extra}")
    return lines


def code_lines(r: dict, bits: int) -> list:
    from sdllm.models import encodings

    lines = [f"spike codes for these {bits}-bit activations (same integers, so the same perplexity; P·V's unsigned "
             "probabilities go as counts in every code):",
             f"  {'code':<10} {'T':>4} {'spikes/token':>14} {'SOPs/token':>14}  synapse op"]
    for name, code in encodings.CODES.items():
        c = r["codes"][name]
        op = "add" if code.adds_only else "multiply-accumulate"
        lines.append(f"  {name:<10} {code.timesteps(bits):>4} {c['spikes_per_token']:>14,.0f} {c['sops_per_token']:>14,.0f}  {op}")
    return lines


def ablation_lines(r: dict, rows: list, q) -> list:
    from sdllm.formats.model import qmax

    lines = [f"ablation (W{q.weight_bits}A{q.act_bits}, same held-out windows):",
             f"  {'model':<62} {'T':>4} {'perplexity':>11} {'x float':>8} {'SOPs/token':>13}"]
    base = [("float", None, r["float"], None), (f"weight-only W{q.weight_bits} (float activations)", None, r["weight_only"], None),
            ("SDLLM (this model, integer reference)", qmax(q.act_bits), r["integer"], r["sops_per_token"])]
    for label, T, ppl, sops in base + rows:
        t = f"{T:>4}" if T else "   -"
        s = f"{sops:>13,.0f}" if sops else "            -"
        lines.append(f"  {label:<62} {t} {ppl:>11.3f} {ppl / r['float']:>8.3f} {s}")
    return lines


def histogram_png(histogram: dict, T: int) -> bytes:
    """Spike-count histogram (how many of T steps each input neuron fires), one line per stage kind, as a PNG."""
    import io

    import matplotlib
    import numpy as np

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
