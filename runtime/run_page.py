"""The run report (`runtime.run_report`) as one self-contained HTML page: summary, the SOPs and
spikes of every core on its chip's mesh, per stage and per layer, the energy breakdown, the
chip-to-chip traffic, a raster of one token's phases, and tables."""

import html
import math

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from sdllm import pages
from sdllm.stages import CoreType, NodeKind

CHIP_PANELS_MAX = 16  # chips drawn on the mesh figures (the busiest first)
NAMED_CORES_MAX = 48  # cores per chip up to which each mesh cell carries its core's name
CORE_ROWS_MAX = 200  # rows of the per-core table (the busiest first)
RASTER_LABELS_MAX = 60  # cores up to which the raster names every row


def _short(name: str) -> str:
    """'L0.o[0]' -> 'L0 o\n[0]': a core's name that fits a mesh cell."""
    return name.replace(".", " ", 1).replace("[", "\n[", 1)


def _mesh_figure(r: dict, key: str, label: str) -> Figure | None:
    """One panel per chip (the busiest CHIP_PANELS_MAX), cropped to the part of the mesh any
    chip uses, each core's cell coloured by its value (log scale) and named when few."""
    values = [c for c in r["cores"] if c[key] is not None]
    if not values:
        return None
    chips = sorted({c["chip"] for c in values}, key=lambda k: -sum(c[key] for c in values if c["chip"] == k))
    chips = sorted(chips[:CHIP_PANELS_MAX])
    xy = np.array([p for c in values if c["chip"] in chips for p in c["positions"]]).reshape(-1, 2)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    grids = np.full((len(chips), h, w), np.nan)
    names = {}
    for c in values:
        if c["chip"] not in chips:
            continue
        i = chips.index(c["chip"])
        for x, y in c["positions"]:
            grids[i, y - y0, x - x0] = c[key]
        x, y = c["positions"][0]
        names.setdefault(i, []).append((x - x0, y - y0, _short(c["name"])))
    positive = grids[grids > 0]
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    norm = LogNorm(lo, max(hi, lo * 10))
    cols = min(len(chips), 4)
    rows = math.ceil(len(chips) / cols)
    cell = min(0.75, 7.0 / (cols * w), 9.0 / (rows * h))  # inches per core
    fig = Figure(figsize=(cols * w * cell + 1.6, rows * h * cell + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee", under="white")
    named = all(len(n) <= NAMED_CORES_MAX for n in names.values()) and cell >= 0.45
    for i, (ax, grid, chip) in enumerate(zip(axes, grids, chips)):
        shown = np.where(grid > 0, grid, np.where(np.isnan(grid), np.nan, lo / 10))
        im = ax.imshow(shown, origin="lower", cmap=cmap, norm=norm, interpolation="none",
                       extent=(x0 - 0.5, x1 + 0.5, y0 - 0.5, y1 + 0.5))
        ax.set_title(f"chip {chip}", fontsize=9)
        ax.set_xticks(np.arange(x0, x1 + 2) - 0.5, minor=True)
        ax.set_yticks(np.arange(y0, y1 + 2) - 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=1)
        ax.tick_params(which="both", length=0, labelsize=7)
        ax.set_xticks(range(x0, x1 + 1) if w <= 16 else [])
        ax.set_yticks(range(y0, y1 + 1) if h <= 16 else [])
        if named:
            for x, y, name in names.get(i, []):
                v = grid[y, x]
                dark = v > 0 and norm(v) < 0.6
                ax.text(x + x0, y + y0, name, ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    for ax in axes[len(chips):]:
        ax.set_visible(False)
    mx, my = r["mesh"]
    fig.colorbar(im, ax=axes.tolist(), label=f"{label}\n(log; white: none, grey: no core)", extend="min", shrink=0.9)
    fig.suptitle(f"x {x0}–{x1}, y {y0}–{y1} of each chip's {mx} x {my} mesh", fontsize=8)
    return fig


def _stage_layer_figure(r: dict) -> Figure:
    metrics = [("sops_per_token", "SOPs per token")]
    if r.get("spikes_per_token") is not None:
        metrics.append(("spikes_per_token", "spikes sent per token"))
    fig = Figure(figsize=(11, 3.2 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
    stage_names = [s["stage"] for s in r["stages"]]
    colours = {name: matplotlib.colormaps["tab10"](k % 10) for k, name in enumerate(stage_names)}
    layer_names = [lay["layer"] for lay in r["layers"]]
    by_layer = {}  # (layer, stage) -> value, for the stacked bars
    for c in r["cores"]:
        layer = "head" if c["layer"] >= len([n for n in layer_names if n.isdigit()]) else str(c["layer"])
        unit = NodeKind.UNIT.value
        stage = c["node"].rsplit(".", 1)[-1] if c["type"] != CoreType.NEURON_UNIT else unit
        for key, _ in metrics:
            k = (key, layer, stage if stage in colours else unit)
            by_layer[k] = by_layer.get(k, 0.0) + (c[key] or 0.0)
    for row, (key, label) in enumerate(metrics):
        ax, lax = axes[row]
        values = [s.get(key, 0.0) for s in r["stages"]]
        ax.bar(range(len(values)), values, color=[colours[n] for n in stage_names])
        ax.set_xticks(range(len(values)), stage_names, fontsize=8, rotation=30)
        ax.set_ylabel(label)
        ax.set_title(f"{label}, per stage (all layers)", fontsize=9)
        bottom = np.zeros(len(layer_names))
        for name in stage_names:
            v = np.array([by_layer.get((key, layer, name), 0.0) for layer in layer_names])
            if v.any():
                lax.bar(range(len(layer_names)), v, bottom=bottom, color=colours[name], label=name)
                bottom += v
        step = max(1, math.ceil(len(layer_names) / 40))
        lax.set_xticks(range(0, len(layer_names), step), layer_names[::step], fontsize=8)
        lax.set_xlabel("layer")
        lax.set_title(f"{label}, per layer (stacked by stage)", fontsize=9)
        lax.legend(fontsize=7, ncol=4, loc="upper right")
        lax.set_ylim(top=1.25 * max(bottom.max(initial=0), 1))
    return fig


def _energy_figure(r: dict) -> Figure:
    e = r["energy"]
    parts = [("synaptic ops", e["sop_energy_nj"], "tab:blue"), ("neuron updates", e["neuron_energy_nj"], "tab:orange"),
             ("NoC" + ("" if r["noc"] is not None else " (not counted)"), e["noc_energy_nj"], "tab:green")]
    total = sum(v for _, v, _ in parts) or 1.0
    fig = Figure(figsize=(10, 1.5), layout="constrained")
    ax = fig.subplots()
    left = 0.0
    for name, v, colour in parts:
        ax.barh(0, v, left=left, height=0.6, color=colour, label=f"{name}: {v:,.1f} nJ ({100 * v / total:.1f}%)")
        if v / total > 0.08:
            ax.text(left + v / 2, 0, f"{name}\n{v:,.0f} nJ", ha="center", va="center", fontsize=8, color="white")
        left += v
    ax.set_yticks([])
    ax.set_ylim(-0.5, 0.5)
    ax.set_xlabel(f"energy per token: {total:,.0f} nJ in all (the hw config's constants)", fontsize=9)
    ax.set_xlim(0, total)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def _traffic_figure(r: dict) -> Figure | None:
    t = np.asarray(r.get("chip_traffic") or [], dtype=float).reshape(-1, 3)
    if not len(t):
        return None
    chips = sorted(set(t[:, 0].astype(int)) | set(t[:, 1].astype(int)))
    index = {c: i for i, c in enumerate(chips)}
    m = np.full((len(chips), len(chips)), np.nan)
    for a, b, v in t:
        m[index[int(a)], index[int(b)]] = v
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="white")
    im = ax.imshow(m, cmap=cmap, norm=LogNorm(np.nanmin(m), max(np.nanmax(m), np.nanmin(m) * 10)), interpolation="none")
    ax.set_xticks(range(len(chips)), chips, fontsize=8)
    ax.set_yticks(range(len(chips)), chips, fontsize=8)
    ax.set_xlabel("destination chip")
    ax.set_ylabel("source chip")
    fig.colorbar(im, ax=ax, label="packets per token, measured (log scale)")
    return fig


def _raster_figure(r: dict) -> Figure | None:
    ra = r.get("raster")
    if not ra:
        return None
    period = r["period"]
    sent = np.zeros((len(ra["cores"]), period))
    cells = np.asarray(ra["sent"], dtype=np.int64).reshape(-1, 3)
    sent[cells[:, 0], cells[:, 1]] = cells[:, 2]
    segments = sorted(ra["unit_segments"].items(), key=lambda kv: kv[1][0])
    n_out = max((b for _, (_, b) in segments), default=1)
    rows = len(ra["cores"])
    fig = Figure(figsize=(11, 3.0 + 0.13 * min(rows, RASTER_LABELS_MAX) + 3.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [max(min(rows, RASTER_LABELS_MAX), 8), 30]})
    positive = sent[sent > 0]
    norm = LogNorm(1, max(positive.max() if positive.size else 10, 10))
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="white")
    im = top.imshow(np.where(sent > 0, sent, 0.5), aspect="auto", cmap=cmap, norm=norm, interpolation="none",
                    extent=(-0.5, period - 0.5, rows - 0.5, -0.5))
    if rows <= RASTER_LABELS_MAX:
        top.set_yticks(range(rows), ra["cores"], fontsize=6)
    else:
        top.set_ylabel("cores (build order)")
    top.set_title(f"what each core sent, step by step, in token {ra['position']}'s period "
                  f"(spikes and graded sums; white: nothing)", fontsize=9)
    fig.colorbar(im, ax=top, label="values sent (log)", pad=0.01)
    s = np.asarray(ra["spikes"], dtype=float).reshape(-1, 3)
    for sign, colour, label in ((1, "tab:red", "positive event"), (-1, "tab:blue", "negative event")):
        pick = np.sign(s[:, 2]) == sign
        bottom.scatter(s[pick, 0], s[pick, 1], s=4, marker="s", lw=0, color=colour, label=label, rasterized=True)
    layer = ra["unit"].rsplit(".", 1)[0] + "."
    for w in ra["windows"]:  # the unit's stages' windows: when their cores receive its trains
        if w["node"].startswith(layer):
            bottom.axvspan(w["first"] - 0.5, w["last"] + 0.5, color="0.93", lw=0, zorder=0)
    for name, (a, b) in segments:
        bottom.axhline(a - 0.5, color="0.8", lw=0.5)
        bottom.text(1.0, (a + b) / 2, f" {name}", fontsize=7, va="center", ha="left",
                    transform=bottom.get_yaxis_transform())
    bottom.set_ylim(n_out - 0.5, -0.5)
    mine = [w["last"] for w in ra["windows"] if w["node"].startswith(layer)]
    end = min(period, max(mine, default=period) + 3)  # the unit's layer's part of the period
    bottom.set_xlim(-0.5, end - 0.5)
    bottom.set_xlabel("timestep within the token's period (phase)" + ("" if end == period else
                                                                      f"; phases 0–{end - 1}: this layer's part"))
    bottom.set_ylabel(f"{ra['unit']} output")
    bottom.set_title(f"spike raster of {ra['unit']}: the spike trains it sends to each stage (labelled at the right; "
                     f"shaded: the windows in which its stages' cores receive them)", fontsize=9)
    bottom.legend(fontsize=7, loc="lower right", markerscale=4)
    return fig


def _per_token(v) -> str | None:
    """A mean per token: whole numbers above 100, one decimal below."""
    return None if v is None else f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:,.1f}"


def _summary(r: dict) -> list:
    e, noc = r["energy"], r["noc"]
    s = r["sampling"]
    sampling = "greedy" if s["temperature"] == 0 else (f"temperature {s['temperature']:g}, top-k {s['top_k'] or 'all'}, "
                                                       f"top-p {s['top_p']:g}, seed {s['seed']}")
    return [
        ("build", r["build"]), ("target", r["target"]), ("backend", r["backend"] + ("" if r["stepped"] else
                                                                                     " (computed, not stepped)")),
        ("tokens", f"{r['prompt_tokens']} prompt + {r['generated_tokens']} generated ({sampling})"),
        ("generated text", None if r.get("generated_text") is None else repr(r["generated_text"])),
        ("timesteps", f"{r['timesteps']:,} ({r['positions']} positions: the prompt's an interval of {r['interval']} apart, "
                      f"then {r['period']} per generated token)"),
        ("SOPs per token", f"{r['sops_per_token']:,.0f} ({e['graded_sops_per_token']:,.0f} of them graded)"),
        ("spikes per token", None if r["spikes_per_token"] is None else f"{r['spikes_per_token']:,.0f} (values sent, all cores)"),
        ("energy per token", f"{e['energy_per_token_uj']:.3f} uJ; latency {e['latency_per_token_ms']:.3f} ms per generated "
                             f"token, {e['prompt_interval_ms']:.3f} ms per prompt token"),
        ("45 nm estimate", f"SDLLM {e['sdllm_45nm_uj']:.3f} uJ; the dense model {e['dense_fp32_45nm_uj']:.3f} uJ at FP32, "
                           f"{e['dense_fp16_45nm_uj']:.3f} at FP16, {e['dense_int8_45nm_uj']:.3f} at INT8, "
                           f"{e['integer_ann_45nm_uj']:.3f} as an integer ANN, plus {e['weights_sram_45nm_uj']:.3f} (SRAM) to "
                           f"{e['weights_dram_45nm_uj']:.3f} (DRAM) reading its weights"),
        ("NoC per token", None if noc is None else f"{noc['packets_per_token']:,.0f} packets, "
         f"{noc['packet_hops_per_token']:,.0f} packet-hops, {noc['chip_crossings_per_token']:,.0f} chip crossings"),
    ]


def format_html(report: dict) -> str:
    """The run report as one self-contained, deterministic HTML page."""
    r, esc = report, html.escape
    counted = r["spikes_per_token"] is not None
    not_counted = "not counted: the fast executor computes the network without stepping it"
    sections = [
        ("Synaptic operations per core, on each chip's mesh", _mesh_figure(r, "sops_per_token", "SOPs per token"), ""),
        ("Spikes sent per core, on each chip's mesh", _mesh_figure(r, "spikes_per_token", "values sent per token")
         if counted else None, not_counted),
        ("Per stage and per layer", _stage_layer_figure(r), ""),
        ("Energy per token", _energy_figure(r), ""),
        ("Traffic between chips, measured", _traffic_figure(r),
         not_counted if r["chip_traffic"] is None else "no chip-to-chip traffic: every spike stayed on its chip"),
        ("One token's phases", _raster_figure(r), "no raster in this report"),
    ]
    body = []
    for i, (head, fig, note) in enumerate(sections):
        body.append(f"<h2>{esc(head)}</h2>\n")
        body.append(pages.svg(fig, f"run{i}") + "\n" if fig is not None else f"<p class=\"note\">{esc(note)}</p>\n")
    body.append("<h2>Per stage</h2>\n")
    body.append(pages.table(["stage", "cores", "SOPs per token", "spikes sent per token"], [
        [s["stage"], s["cores"], _per_token(s["sops_per_token"]), _per_token(s.get("spikes_per_token"))] for s in r["stages"]]))
    body.append("<h2>Per layer</h2>\n")
    body.append(pages.table(["layer", "cores", "SOPs per token", "spikes sent per token"], [
        [lay["layer"], lay["cores"], _per_token(lay["sops_per_token"]), _per_token(lay.get("spikes_per_token"))]
        for lay in r["layers"]]))
    cores = sorted(r["cores"], key=lambda c: -c["sops_per_token"])[:CORE_ROWS_MAX]
    more = len(r["cores"]) - len(cores)
    body.append("<h2>Per core" + (f" (the {CORE_ROWS_MAX} busiest of {len(r['cores']):,})" if more else "") + "</h2>\n")
    body.append(pages.table(["core", "type", "chip", "x, y", "neurons", "SOPs per token", "spikes sent per token",
                             "firing rate"], [
        [c["name"], c["type"], c["chip"], " ".join(f"{x},{y}" for x, y in c["positions"]), c["neurons"],
         _per_token(c["sops_per_token"]), _per_token(c["spikes_per_token"]),
         None if c["firing_rate"] is None else f"{c['firing_rate']:.4f}"]
        for c in cores]))
    title = f"sdllm run report — {r['target']}, {r['backend']} backend"
    return pages.page(title, _summary(r), body)
