"""sdllm-eval: what spiking costs, measured on held-out text.

    sdllm-eval model.pt [--float SRC] [--windows 8] [--text FILE ...] [--build DIR] [--ablation] [--nonlinearities]

Prints perplexities (float, weight-only, fake-quant, integer, and with --build the compiled
network's) in-domain (held-out pydoc topics) and out of domain (the stdlib's docstrings, text
calibration never sees), and on your own text with --text; then, in-domain, per-stage cosine
and attention KL against float, firing rates, SOPs per spike code, the ablation table and the
cost of each integer-only nonlinearity (`sdllm.models.evaluation.evaluate`), and plots the histogram.
"""

import argparse
import os
import sys

from sdllm import codes, outputs, resources, stages
from sdllm.cli import guarded
from sdllm.errors import SdllmError


def main(argv=None):
    return guarded("sdllm-eval", lambda: report(_args(argv)), process=argv is None)


def _args(argv):
    ap = argparse.ArgumentParser(prog="sdllm-eval", description="What spiking costs: an SDLLM against its float model on held-out text.")
    ap.add_argument("model", help="model.pt")
    ap.add_argument("--float", dest="float_path", help="the float model it was converted from: our float .pt, a Hugging Face "
                    "directory or a .gguf (default: the embedded default model)")
    ap.add_argument("--windows", type=int, default=8, help="windows of max_seq_len tokens per text")
    ap.add_argument("--text", nargs="+", default=[], metavar="FILE",
                    help="also your own text: UTF-8 files, or JSON lines with a \"text\" field")
    ap.add_argument("--build", help="also the perplexity of this compiled build directory (fast backend)")
    ap.add_argument("--plot", help="where to write the spike-count histogram (default: MODEL.spikes.png)")
    ap.add_argument("--ablation", action="store_true", help="convert and score the ablation variants (slow on big models)")
    ap.add_argument("--nonlinearities", action="store_true", help="cost of each integer-only nonlinearity vs float")
    ap.add_argument("--calib-windows", type=int, default=16, help="calibration windows for the ablation's conversions")
    return ap.parse_args(argv)


def report(args) -> None:
    from sdllm.formats import build as buildformat
    from sdllm.formats import model as modelformat
    from sdllm.models.evaluation.evaluate import (
        IN_DOMAIN,
        ablation,
        domains,
        evaluate,
        nonlinearity_costs,
        perplexities,
    )
    from sdllm.models.source.corpus import calibration_tokens
    from sdllm.models.source.importers import load_source

    if args.windows < 1:
        raise SdllmError(f"--windows: must be at least 1, got {args.windows}")
    if args.calib_windows < 1:
        raise SdllmError(f"--calib-windows: must be at least 1, got {args.calib_windows}")
    plot = args.plot or os.path.splitext(args.model)[0] + ".spikes.png"
    outputs.check_file(plot, "--plot")  # before the evaluation, not after
    model = modelformat.load(args.model)
    resources.require_memory(resources.model_bytes(model.config), args.model)  # the integer reference's int64 weights
    build = buildformat.read(args.build) if args.build else None
    texts = domains(model, args.windows, args.text)
    float_model, _ = load_source(args.float_path, model.config.max_seq_len)
    results = {}
    for name, rows in texts.items():
        results[name] = evaluate(model, float_model, rows=rows) if name == IN_DOMAIN else perplexities(model, float_model, rows)
        if build is not None:
            from sdllm.runtime.fast import build_perplexity

            results[name]["compiled"] = build_perplexity(build, rows)
    r, rows = results[IN_DOMAIN], texts[IN_DOMAIN]
    q = model.quant
    print(f"perplexity, {q.describe()} ({q.precision()}), θ={q.theta}, rotation {'on' if q.rotate else 'off'}, "
          f"{'GPTQ' if q.gptq else 'RTN'} weights, γ {'calibrated' if q.calibrate_gamma else '= 1'}:")
    print("\n".join(perplexity_lines(results, q, args.build)))
    print(f"logits KL(float || integer), in-domain: {r['logits_kl']:.4f} nats per token")
    print(f"spikes per token {r['spikes_per_token']:,.0f}, SOPs per token {r['sops_per_token']:,.0f}")
    print("\n".join(layer_lines(r)))
    print("\n".join(code_lines(r, q)))
    outputs.write_file(histogram_png(r["histogram"]), plot, "--plot")
    print(f"plot: {plot}")
    if args.nonlinearities:
        print("integer-only nonlinearities: perplexity with each replaced by its float version")
        print(f"  {'all fixed-point':<28} {r['integer']:.3f}")
        for names, ppl in nonlinearity_costs(model, rows).items():
            print(f"  {'float ' + names:<28} {ppl:.3f}   (cost of the fixed-point version: {r['integer'] / ppl:.3f} x)")
    if args.ablation:
        calib = calibration_tokens(model.tokenizer, model.config.max_seq_len, args.calib_windows)
        print("\n".join(ablation_lines(r, ablation(model, float_model, rows, calib), q)))


def perplexity_lines(results: dict, q, build_dir=None) -> list:
    """The perplexities of every text side by side, each with its ratio to float."""
    names = list(results)
    width = max(len(n) for n in names) + 2
    lines = ["  " + " " * 13 + "".join(f"{n:>{width}}" for n in names)]
    rows = [("float", "float"), ("weight_only", f"weight-only W{q.weight_bits}"), ("fake_quant", "fake-quant"),
            ("integer", "integer"), ("compiled", "compiled")]
    for key, label in rows:
        if key not in results[names[0]]:
            continue
        cells = []
        for n in names:
            v = results[n][key]
            cells.append(f"{v:.3f}" + (f" ({v / results[n]['float']:.2f}x)" if key != "float" else ""))
        lines.append(f"  {label:<13}" + "".join(f"{c:>{width}}" for c in cells))
    tokens = ", ".join(f"{results[n]['tokens']:,} tokens" for n in names)
    lines.append(f"  ({tokens}; integer: the SDLLM the compiled network runs"
                 + (f"; compiled: {build_dir}, fast backend" if build_dir else "") + ")")
    if "compiled" in results[names[0]]:
        same = all(results[n]["compiled"] == results[n]["integer"] for n in names)
        lines.append(f"  compiled network {'equal to' if same else 'DIFFERENT from'} the integer reference on every text")
    return lines


def layer_lines(r: dict) -> list:
    lines = ["per stage: cosine(float activation, spike counts), firing rate (spikes per neuron per step of its "
             "window of T steps), silent share"]
    for stage, cos in r["cosine"].items() if r["cosine"] else ((s, None) for s in r["firing"]):
        counts = r["histogram"][stage]
        c = f"{cos:6.3f}" if cos is not None else "     -"
        kl = r["attention_kl"].get(stage.split(".")[0]) if stages.stage_of(stage).kind is stages.NodeKind.KV_PV else None
        extra = f"   attention KL(integer || float) {kl:.4f}" if kl is not None else ""
        lines.append(f"  {stage:<12} cos {c}   T {r['windows'][stage]:>3}   rate {r['firing'][stage]:.3f}   "
                     f"silent {counts[0] / counts.sum():6.1%}{extra}")
    return lines


def code_lines(r: dict, spec) -> list:
    from sdllm import codes

    lines = [f"spike codes for the same integers (every spike point in one code; so the same perplexity); this model "
             f"carries {spec.precision()} ({r['sops_per_token']:,.0f} SOPs per token):",
             f"  {'code':<10} {'T (linear inputs, attention)':>30} {'spikes/token':>14} {'SOPs/token':>14}  synapse op"]
    for name, code in codes.CODES.items():
        c = r["codes"][name]
        op = "add" if code.adds_only else "multiply-accumulate"
        t = f"{code.timesteps(spec.at(stages.ATTN_IN, None).bits)}, {code.timesteps(spec.at(stages.PROBS, None).bits)}"
        lines.append(f"  {name:<10} {t:>30} {c['spikes_per_token']:>14,.0f} {c['sops_per_token']:>14,.0f}  {op}")
    return lines


def figure(x: float, digits: int = 3) -> str:
    """A perplexity or ratio for a table: fixed decimals, or three significant digits past 10,000."""
    return f"{x:.3g}" if abs(x) >= 1e4 else f"{x:.{digits}f}"


def ablation_lines(r: dict, rows: list, q) -> list:
    lines = [f"ablation ({q.describe()}, same held-out windows; T of the linear layers' inputs):",
             f"  {'model':<62} {'T':>4} {'perplexity':>11} {'x float':>8} {'SOPs/token':>13}"]
    base = [("float", None, r["float"], None), (f"weight-only W{q.weight_bits} (float activations)", None, r["weight_only"], None),
            ("SDLLM (this model, integer reference)", codes.steps(codes.reference(q.act_bits), q.act_bits), r["integer"],
             r["sops_per_token"])]
    for label, T, ppl, sops in base + rows:
        t = f"{T:>4}" if T else "   -"
        s = f"{sops:>13,.0f}" if sops else "            -"
        lines.append(f"  {label:<62} {t} {figure(ppl):>11} {figure(ppl / r['float']):>8} {s}")
    return lines


def histogram_png(histogram: dict) -> bytes:
    """Histogram of the integers each stage's inputs carry (|q|), one line per stage kind, as a PNG."""
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
    ax.set_xlabel("|q| per input neuron per token (ternary: its spikes)")
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
