"""The core-mapping report as one self-contained HTML page: summary, inline SVG plots, per-layer and per-chip tables."""

import html
import math

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from sdllm.pages import STYLE
from sdllm.pages import svg as _svg
from sdllm.pages import table as _table

CHIP_PANELS_MAX = 16  # above this many chips used, plot 1 shows chips (one panel per z-plane) instead of cores
def _line(fmt: str, d: dict, *keys) -> str | None:
    """fmt filled with d's values at keys, or None if any is missing."""
    vals = [d.get(k) for k in keys]
    return None if any(v is None for v in vals) else fmt.format(*vals)


def _grid(n: int, cols: int = 4) -> tuple[int, int]:
    return math.ceil(n / min(n, cols)), min(n, cols)


def _topology(r: dict) -> tuple[int, int, int]:
    if r.get("topology"):
        return tuple(r["topology"])
    side = math.ceil(math.sqrt(max(r.get("chips_available") or len(r.get("chips", [])), 1)))
    return side, side, 1


def _util_figure(r: dict) -> Figure | None:
    cores, chips = r.get("cores", []), r.get("chips", [])
    if not cores and not chips:
        return None
    used = sorted({c["chip"] for c in cores} | {c["chip"] for c in chips})
    if len(used) <= CHIP_PANELS_MAX and cores:  # one panel per chip: synapse_util at every physical core position
        panel = {chip: i for i, chip in enumerate(used)}
        xyu = np.array([(panel[c["chip"]], x, y, c["synapse_util"])
                        for c in cores for x, y in (c.get("positions") or [c["position"]])], dtype=float)
        mx, my = r.get("mesh") or (int(xyu[:, 1].max()) + 1, int(xyu[:, 2].max()) + 1)
        grids = np.full((len(used), my, mx), np.nan)
        grids[xyu[:, 0].astype(int), xyu[:, 2].astype(int), xyu[:, 1].astype(int)] = xyu[:, 3]
        titles, label = [f"chip {c}" for c in used], "synapse memory used per core"
    else:  # one panel per z-plane: core_util of every chip on the tx x ty chip grid
        tx, ty, _ = _topology(r)
        cu = np.array([(c["chip"], c["core_util"]) for c in chips], dtype=float).reshape(-1, 2)
        ids = cu[:, 0].astype(int)
        planes = sorted(set((ids // (tx * ty)).tolist()))
        grids = np.full((len(planes), ty, tx), np.nan)
        grids[np.searchsorted(planes, ids // (tx * ty)), (ids // tx) % ty, ids % tx] = cu[:, 1]
        titles, label = [f"chips at z = {z}" for z in planes], "cores used per chip"
    rows, cols = _grid(len(grids), 8 if len(grids) > 8 else 4)
    h, w = grids.shape[1:]
    fig = Figure(figsize=(max(cols * 2.2, 3.6), rows * 2.2 * max(min(h / w, 2), 0.4) + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    for ax, grid, title in zip(axes, grids, titles):
        im = ax.imshow(grid, origin="lower", cmap=cmap, vmin=0, vmax=1, interpolation="none")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(np.arange(w + 1) - 0.5 if w <= 64 else [], minor=True)  # cell borders on small grids
        ax.set_yticks(np.arange(h + 1) - 0.5 if h <= 64 else [], minor=True)
        ax.grid(which="minor", color="white", lw=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    for ax in axes[len(grids):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes.tolist(), label=f"{label}\n(grey: unused)", orientation="horizontal", aspect=40)
    return fig


def _layers_figure(r: dict) -> Figure:
    layers = r.get("layers", [])
    x = np.arange(len(layers))
    fig = Figure(figsize=(min(4 + 0.25 * len(layers), 14), 3.6))
    ax, tot = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    ax.bar(x, [lay["cores"] for lay in layers], color="tab:blue", label="cores used")
    ax.plot(x, [lay.get("lower_bound", np.nan) for lay in layers], "k_", ms=12, mew=2, label="lower bound")
    step = max(1, math.ceil(len(layers) / 40))  # at most 40 tick labels
    ax.set_xticks(x[::step], [str(lay["layer"]) for lay in layers[::step]], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("cores")
    ax.set_ylim(top=1.2 * max([lay["cores"] for lay in layers], default=1))  # room for the legend
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    totals = [r.get("cores_used", 0), r.get("cores_lower_bound", 0)]
    tot.bar([0, 1], totals, color=["tab:blue", "0.4"])
    tot.set_xticks([0, 1], ["used", "lower\nbound"], fontsize=8)
    tot.set_title(_line("{:.3f} x the bound", r, "cores_over_bound") or "total", fontsize=9)
    fig.tight_layout()
    return fig


def _traffic_figure(r: dict) -> Figure | None:
    t = np.asarray(r.get("chip_traffic") or [], dtype=float).reshape(-1, 3)
    if not len(t):
        return None
    n = int(max(t[:, :2].max(), max((c["chip"] for c in r.get("chips", [])), default=0))) + 1
    m = np.full((n, n), np.nan)
    m[t[:, 0].astype(int), t[:, 1].astype(int)] = t[:, 2]
    pos = t[:, 2][t[:, 2] > 0]
    wide = bool(len(pos)) and pos.max() > 100 * pos.min()
    norm = LogNorm(pos.min(), pos.max()) if wide else Normalize(0, t[:, 2].max() or 1)
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="white")
    im = ax.imshow(np.where(m > 0, m, np.nan) if wide else m, cmap=cmap, norm=norm, interpolation="none")
    ax.set_xlabel("destination chip")
    ax.set_ylabel("source chip")
    fig.colorbar(im, ax=ax, label="packets per token" + (" (log scale)" if wide else ""))
    return fig


def _summary(r: dict) -> list[tuple[str, str | None]]:
    p = r.get("placement", {})
    dims = {k: " x ".join(map(str, r[k])) for k in ("topology", "mesh") if r.get(k)}
    return [
        ("cores used", _line("{:,} of {:,}", r, "cores_used", "cores_available")),
        ("lower bound", _line("{:,} cores: used is {:.3f} x the bound", r, "cores_lower_bound", "cores_over_bound")),
        ("chips used", _line("{} of {}", r, "chips_used", "chips_available")),
        ("chip topology", _line("{} chips, {} cores per chip", dims, "topology", "mesh")),
        ("timesteps", _line("{} per spike train, {} per token", r, "timesteps_per_spike_train", "timesteps_per_token")),
        ("token latency", _line("~{:,.0f} us", r, "token_latency_us")),
        ("layer-pipelined prompt", _line("a position every {} steps: {:,.0f} prompt tokens/s", r, "initiation_interval",
                                         "prompt_tokens_per_s")),
        ("time to first token", ", ".join(f"{us / 1e3:,.2f} ms after a {n}-token prompt" for n, us in
                                          sorted(r.get("time_to_first_token_us", {}).items(), key=lambda e: int(e[0])))
         or None),
        ("generation", _line("{:,.0f} new tokens/s per sequence; a batch of up to {} sequences at that rate each",
                             r, "generated_tokens_per_s", "batch_at_full_rate")),
        ("placement", _line("{} (spike rates: {})", p, "method", "rates")),
        ("spike-hops per token", _line("{:,.0f} vs greedy {:,.0f}: {:.3f} x the baseline", p, "spike_hops_per_token",
                                       "greedy_spike_hops_per_token", "hops_vs_greedy")),
        ("chip crossings per token", _line("{:,.0f} vs greedy {:,.0f}", p, "chip_crossings_per_token",
                                           "greedy_chip_crossings_per_token")),
    ]


def format_html(report: dict) -> str:
    """The report dict (build_report's) as one self-contained, deterministic HTML page."""
    r, esc = report, html.escape
    title = f"sdllm core-mapping report — {r.get('target', '?')} ({r.get('system', r.get('target', '?'))})"
    tx, ty, _ = _topology(r)
    sections = [
        ("Core utilisation", _util_figure(r), "no cores in the report"),
        ("Cores per layer against the lower bound", _layers_figure(r), ""),
        ("Traffic between chips", _traffic_figure(r), "no chip-to-chip traffic: every spike stays on its chip"),
    ]
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
           f"<style>{STYLE}</style></head><body>\n<h1>{esc(title)}</h1>\n<dl>\n"]
    out += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>\n" for k, v in _summary(r) if v is not None]
    out.append("</dl>\n")
    for i, (head, fig, note) in enumerate(sections):
        out.append(f"<h2>{esc(head)}</h2>\n")
        out.append(_svg(fig, str(i)) + "\n" if fig is not None else f"<p class=\"note\">{esc(note)}</p>\n")
    out.append("<h2>Per layer</h2>\n")
    out.append(_table(["layer", "cores", "lower bound", "used / bound", "synapse bits", "neurons"], [
        [lay["layer"], lay["cores"], lay.get("lower_bound"),
         f"{lay['cores'] / lay['lower_bound']:.3f}" if lay.get("lower_bound") else None,
         lay["synapse_bits"], lay["neurons"]] for lay in r.get("layers", [])]))
    out.append("<h2>Per chip</h2>\n")
    out.append(_table(["chip", "x, y, z", "cores", "cores used %", "synapse memory %", "synapse bits", "neurons"], [
        [c["chip"], f"{c['chip'] % tx}, {c['chip'] // tx % ty}, {c['chip'] // (tx * ty)}", c["cores"],
         f"{100 * c['core_util']:.1f}", f"{100 * c['synapse_util']:.1f}", c["synapse_bits"], c["neurons"]]
        for c in r.get("chips", [])]))
    if r.get("stages"):
        out.append("<h2>Schedule (timesteps within a token)</h2>\n")
        out.append(_table(["stage", "first", "last"], [
            [k, s["first"], s["last"]] for k, s in sorted(r["stages"].items(), key=lambda kv: kv[1]["first"])]))
    out.append("</body></html>\n")
    return "".join(out)
