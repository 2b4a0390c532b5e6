"""Issue 23, part 2: a high-precision channel group against mixed precision per point, on
SmolLM2-135M-Instruct (Q4_1 GGUF).

The group (`sdllm-convert --wide-channels G`): the learned rotation starts from the principal
axes of the residual's readers, and q/k/v's, gate/up's and the LM head's inputs carry its G
highest-variance channels at 8 bits with the 4-bit step of the rest. Its counterparts raise
whole points to 8 bits on the default's rotation. For each setting (converted once, cached as
`smollm2_sdllm.py` caches them) the integer reference gives perplexity in-domain (held-out pydoc
topics) and out of domain (stdlib docstrings) as ratios to float, and SOPs per token in the
codes that carry 8-bit points (bit planes, signed-digit planes, graded spikes), each against the
W4A4 default's in the same code. A setting pays when it lowers perplexity by more per added SOP
than its counterparts. Then issue 23's perplexity budgets, searched from the group (bits per
point and per layer for the points outside it), against the issue's targets. Writes
out/wide_channels.png (copied to docs/) and its results section.

    .venv/bin/python benchmarks/wide_channels.py [--windows 8] [--groups 72]
"""

# isort: off
import sdllm  # noqa: F401  (before torch: OMP_WAIT_POLICY for torch's OpenMP threads)
# isort: on

import argparse
import os
import shutil

import torch
from results_page import write_section
from shared_smollm2 import convert_cached
from shared_smollm2 import gguf as fetch_gguf
from smollm2_sdllm import DEFAULT, SEQ, cached_json

from sdllm.formats import model as modelformat
from sdllm.models.evaluation.evaluate import integer_scores, torch_perplexity
from sdllm.models.source.corpus import CALIBRATION_WINDOWS, docstring_windows, held_out_windows
from sdllm.models.source.importers import load_source

CODES = ("bitplane", "naf", "graded")
DOMAINS = ("in-domain", "out of domain")


WIDE = "{wide}"  # in flags: the first group's model.pt, whose rotation the budgets reuse
BUDGET_TARGETS = {1.3: (1.35, 1.5, 1.15), 1.5: (1.55, 1.8, 1.0)}  # issue 23: (in-domain, out of domain, SOPs x W4A4)


def settings(groups: list) -> list:
    """(name, sdllm-convert flags): the default first, then the groups, their counterparts, and
    the perplexity budgets searched from the first group (its rotation reused)."""
    return ([("W4A4", [])]
            + [(f"W4A4, wide group {g} (8-bit)", ["--wide-channels", str(g)]) for g in groups]
            + [("W4A4, gate/up input 8-bit", ["--point-bits", "gate_up=8", "--rotation-from", DEFAULT]),
               ("W4A4, q/k/v, gate/up and head inputs 8-bit",
                ["--point-bits", "qkv=8", "gate_up=8", "head=8", "--rotation-from", DEFAULT])]
            + [(f"budget {b}, wide group {groups[0]}", ["--budget", str(b), "--wide-channels", str(groups[0]),
                                                        "--rotation-from", WIDE]) for b in BUDGET_TARGETS])


def target_lines(rows: list) -> list:
    """Issue 23's budget targets for the budgets searched from the group: held-out ratios, and SOPs
    against the W4A4 default's in each code that carries 8-bit points (the same code for both)."""
    base = rows[0][1]
    lines = []
    for name, r in rows:
        if not name.startswith("budget"):
            continue
        lim_in, lim_out, lim_sops = BUDGET_TARGETS[float(name.split()[1].rstrip(","))]
        checks = [("in-domain", r["ratio"]["in-domain"], lim_in), ("out of domain", r["ratio"]["out of domain"], lim_out)]
        checks += [(f"SOPs x W4A4 ({c})", r["sops"][c] / base["sops"][c], lim_sops) for c in CODES]
        lines.append(f"  {name}: " + ", ".join(f"{what} {x:.3f} (<= {lim}): " + ("MET" if x <= lim else f"MISSED by {x / lim:.2f}x")
                                             for what, x, lim in checks))
        b = r.get("budget") or {}
        if b:
            lines.append(f"    searched: {b['measured_ratio']:.3f} x float on {b['windows']} calibration windows not fitted to "
                         f"(start {b['default_ratio']:.3f}); conversion {r['convert_s'] / 60:.1f} min with the group's "
                         f"rotation reused, peak {r['peak_gb']:.2f} GB")
    return lines


def plot(rows: list, path: str) -> None:
    """Perplexity ratio in-domain against SOPs per token in bit planes, one marker per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = {}  # settings that land on the same point share one label
    for name, r in rows:
        x, y = r["sops"]["bitplane"] / 1e6, r["ratio"]["in-domain"]
        ax.scatter([x], [y], marker="s" if "wide" in name else "o", zorder=3)
        labels.setdefault((round(x, 1), round(y, 3)), []).append(name.replace("W4A4, ", ""))
    for (x, y), names in labels.items():
        ax.annotate(" = ".join(names), (x, y), fontsize=7, xytext=(5, 3), textcoords="offset points")
    ax.set_xlim(right=ax.get_xlim()[1] * 1.25)  # room for the rightmost label
    ax.set_xlabel("synaptic operations per token in signed bit planes (millions)")
    ax.set_ylabel("perplexity / float, held-out pydoc topics")
    ax.set_title("SmolLM2-135M-Instruct: a wide channel group against 8-bit points (integer reference)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8, help="evaluation windows per domain")
    ap.add_argument("--groups", type=int, nargs="+", default=[72], help="wide group sizes (channels of 576)")
    ap.add_argument("--cache", default=os.path.join("out", "smollm2_models"))
    ap.add_argument("--out", default="out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    gguf = fetch_gguf()
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    float_model, tokenizer = load_source(gguf, SEQ)
    float_model.eval()
    domains = {"in-domain": held_out_windows(tokenizer, SEQ, args.windows),
               "out of domain": docstring_windows(tokenizer, SEQ, args.windows)}
    float_ppl = {domain: torch_perplexity(float_model, rows) for domain, rows in domains.items()}
    print(f"SmolLM2-135M-Instruct: {args.windows} x {SEQ}-token windows per domain; float perplexity "
          f"{float_ppl['in-domain']:.2f} / {float_ppl['out of domain']:.2f}")

    rows, paths = [], {}
    for name, flags in settings(args.groups):
        flags = [paths.get(f, f) for f in flags]
        path, seconds, peak = convert_cached(gguf, flags, args.cache, CALIBRATION_WINDOWS)
        paths.setdefault(DEFAULT, path)
        if name.startswith("W4A4, wide group"):
            paths.setdefault(WIDE, path)
        model = modelformat.load(path)
        r = {"spec": model.quant.describe(), "precision": model.quant.precision(), "convert_s": seconds, "peak_gb": peak,
             "ratio": {}, "sops": {}, "budget": model.budget}
        for domain, windows in domains.items():
            d = cached_json(f"{os.path.splitext(path)[0]}.{domain.replace(' ', '-')}.{args.windows}.scores.json",
                            lambda m=model, w=windows: integer_scores(m, w))
            r["ratio"][domain] = d["integer"] / float_ppl[domain]
            if domain == "in-domain":
                r["sops"] = {code: d["codes"][code]["sops_per_token"] for code in CODES}
        rows.append((name, r))
        print(f"== {name} ({r['precision']}): conversion {seconds / 60:.1f} min, peak {peak:.2f} GB; "
              f"{r['ratio']['in-domain']:.3f} / {r['ratio']['out of domain']:.3f} x float")

    base = rows[0][1]
    lines = ["| setting | x float in-domain | x float out of domain | "
             + " | ".join(f"M SOPs / token, {c} (x W4A4)" for c in CODES) + " | convert |",
             "|---|---|---|" + "---|" * len(CODES) + "---|"]
    for name, r in rows:
        cells = " | ".join(f"{r['sops'][c] / 1e6:.1f} ({r['sops'][c] / base['sops'][c]:.3f}x)" for c in CODES)
        lines.append(f"| {name} | {r['ratio']['in-domain']:.3f} | {r['ratio']['out of domain']:.3f} | {cells} | "
                     f"{r['convert_s'] / 60:.1f} min, {r['peak_gb']:.1f} GB |")
    verdicts = []
    for name, r in rows[1:]:
        if name.startswith("budget"):
            continue
        gained = base["ratio"]["in-domain"] - r["ratio"]["in-domain"]
        added = r["sops"]["bitplane"] / base["sops"]["bitplane"] - 1
        per = gained / added if added > 0 else float("inf")
        verdicts.append((per, name, gained, added))
    verdicts.sort(reverse=True)
    summary = ["Perplexity ratio gained in-domain per added SOP (bit planes), best first:"]
    summary += [f"  {name}: {-gained:+.3f} x float for {100 * added:+.1f}% SOPs ("
                + (f"{per:.2f} per unit of SOPs)" if added > 0 else "fewer SOPs and lower perplexity: it pays outright)")
                for per, name, gained, added in verdicts]
    best = verdicts[0][1]
    summary.append(f"  pays best: {best}" + (" — the group is the budget's better candidate" if "wide" in best
                                              else " — per-point bits are the budget's better candidate"))
    summary += ["", "Issue 23's budget targets, searched from the group:", *target_lines(rows)]
    print("\n".join(lines + [""] + summary))
    png = os.path.join(args.out, "wide_channels.png")
    plot(rows, png)
    shutil.copyfile(png, os.path.join(os.path.dirname(__file__), "..", "docs", "wide_channels.png"))
    lines += ["", "The budgets reuse the group's learned rotation (`--rotation-from`): their conversion times leave out "
              "the rotation's learning, which the group's own conversion includes."]
    write_section("wide_channels", "\n".join(lines + ["", "![perplexity against SOPs: the wide group and 8-bit points]"
                                                      "(wide_channels.png)", "", "```", *summary, "```"]) + "\n")
    print(f"plot: {png} (and docs/wide_channels.png)")


if __name__ == "__main__":
    main()
