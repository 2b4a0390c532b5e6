"""The core-mapping report: per core, per chip, per layer, placement traffic and the schedule."""

from collections import defaultdict

from sdllm import codes, stages
from sdllm.compiler import code_choice
from sdllm.compiler.ir import Network
from sdllm.cores.unit import graded_bounds
from sdllm.formats.model import qmax
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.products import exact_type
from sdllm.stages import CoreType, NodeKind

TTFT_PROMPTS = (1, 64, 512)  # prompt lengths whose time to the first new token the report gives
CORE_TABLE_MAX = 200  # the text report lists every core up to this many (report.json always does)


def build_report(net: Network) -> dict:
    """The report as data (report.json), from what the passes produced."""
    net.need("report", "cores", "bounds", "routes", "placement", "schedule")
    lim, hw = net.hw.core, net.hw
    n_layers = net.model.config.n_layers
    cores = []
    for c in net.cores:
        if not c.on_chip:
            continue
        k = c.span
        table, positions = net.routes[c.id], net.positions(c.id)
        cores.append({
            "id": c.id, "name": c.name, "type": c.type.value, "layer": c.layer, "chip": net.chip(c.id),
            "position": list(positions[0]), "positions": [list(p) for p in positions], "span": k,
            "neurons": c.n_neurons, "axons_in": c.n_axons, "routes_out": table.n_routes,
            "table_entries": table.entries, "table_compressed": table.compressed,
            "synapse_entries": c.synapse_entries, "synapse_bits": c.synapse_bits,
            "synapse_util": round(c.synapse_bits / (k * lim.synapse_memory_bits), 4),
            "neuron_util": round(c.n_neurons / (k * lim.max_neurons), 4),
        })
    bounds = net.bounds
    chips = defaultdict(lambda: {"cores": 0, "synapse_bits": 0, "neurons": 0})
    layers = defaultdict(lambda: {"cores": 0, "lower_bound": 0, "synapse_bits": 0, "neurons": 0})
    head = stages.HEAD.name
    key = lambda layer: head if layer == n_layers else str(layer)  # noqa: E731
    for c in cores:
        for bucket in (chips[c["chip"]], layers[key(c["layer"])]):
            bucket["cores"] += c["span"]
            bucket["synapse_bits"] += c["synapse_bits"]
            bucket["neurons"] += c["neurons"]
    for node in net.nodes.values():
        if node.kind is not NodeKind.HOST:
            layers[key(node.layer)]["lower_bound"] += bounds[node.name]
    for k, v in chips.items():
        v["chip"] = k
        v["core_util"] = round(v["cores"] / hw.cores_per_chip, 4)
        v["synapse_util"] = round(v["synapse_bits"] / (hw.cores_per_chip * lim.synapse_memory_bits), 4)
    s = net.schedule.to_json()
    used, bound = sum(c["span"] for c in cores), sum(bounds.values())
    placement = dict(net.placement.figures)
    return {
        "target": hw.name,
        "system": hw.raw.get("system", {}).get("name", hw.name),
        "cores_per_chip": hw.cores_per_chip,
        "mesh": list(hw.mesh),
        "topology": list(hw.topology),
        "chips_available": hw.chips,
        "synthetic": net.model.synthetic,
        "cores_used": used,
        "cores_lower_bound": bound,
        "cores_over_bound": round(used / bound, 4),
        "cores_available": hw.total_cores,
        "chips_used": len(chips),
        "reduce_cores": sum(c["type"] == CoreType.REDUCE for c in cores),
        "compressed_tables": sum(c["table_compressed"] for c in cores),
        "timesteps_per_spike_train": s["timesteps_per_spike_train"],
        "precision": net.model.quant.precision(),
        "timesteps_per_token": s["period"],
        "token_latency_us": s["period"] * hw.timestep_us,
        "initiation_interval": s["interval"],
        "prompt_tokens_per_s": 1e6 / (s["interval"] * hw.timestep_us),
        "time_to_first_token_us": {str(n): ((n - 1) * s["interval"] + s["period"]) * hw.timestep_us for n in TTFT_PROMPTS},
        # sequences whose generated tokens take turns in the pipeline without slowing any (a batch)
        "batch_at_full_rate": s["period"] // s["interval"],
        "generated_tokens_per_s": 1e6 / (s["period"] * hw.timestep_us),
        "placement": {k: v for k, v in placement.items() if k not in ("chip_traffic", "link_loads")},
        "chip_traffic": placement.get("chip_traffic", []),
        "link_loads": placement.get("link_loads", []),
        "cores": cores,
        "chips": [chips[k] for k in sorted(chips)],
        "layers": [dict(layer=k, **layers[k]) for k in sorted(layers, key=lambda k: (k == head, int(k) if k != head else 0))],
        "stages": s["stages"],
        "products": products(net),
        "codes": code_report(net),
        "graded": graded(net),
    }


def graded(net: Network) -> dict:
    """Every graded hand-off's format and proved range, against the target's payload."""
    model, lim = net.model, net.hw.core
    pieces, piece_bits = codes.graded_pieces(model.config.resid_bits, lim.graded_payload_bits)
    unit_bounds = {}
    for node in net.nodes.values():
        if node.kind in (NodeKind.UNIT, NodeKind.HOST):
            for seg, bound in graded_bounds(node, model).items():
                unit_bounds[seg] = max(unit_bounds.get(seg, 0), bound)
    stage_sums = {name: max(c.payload_bound for c in net.producers(name)) for name, node in net.nodes.items()
                  if node.kind is not NodeKind.UNIT and node.kind is not NodeKind.HOST}
    widest = max(stage_sums, key=stage_sums.get)
    return {
        "payload_bits": lim.graded_payload_bits, "payload_max": lim.payload_max,
        "residual": {"bits": model.config.resid_bits, "frac_bits": fx.FRAC, "max": model.config.resid_max,
                     "saturates_at": model.config.resid_max / (1 << fx.FRAC), "pieces": pieces, "piece_bits": piece_bits,
                     "largest_piece": unit_bounds.get("resid_out", 0)},
        "embedding": unit_bounds.get("embed", 0),
        "ratio": unit_bounds.get("ratio", 0),
        "kv_writes": max((b for seg, b in unit_bounds.items() if seg.endswith("_write")), default=0),
        "stage_sums": {"max": stage_sums[widest], "stage": widest},
    }


def code_report(net: Network) -> dict:
    """Which code carries each stage's input, what it costs, and why: energy and latency per
    token of the chosen codes against every code of the target used everywhere."""
    choice, energy = net.codes, net.hw.energy
    fixed = code_choice.fixed_steps(net)

    def total(pick: dict) -> tuple:
        e = sum(choice.costs[n][c].energy_pj for n, c in pick.items())
        return e, fixed + sum(choice.costs[n][c].steps for n, c in pick.items())

    chosen = total(choice.codes)
    uniform = {c: total({n: c for n in choice.codes}) for c in net.hw.core.spike_codes}
    return {
        "rule": choice.rule,
        "events_from": f"{net.rates.tokens} tokens of calibration text" if net.rates else "inputs spread evenly over their range",
        "chosen": {"energy_nj": round(chosen[0] / 1e3, 3), "steps": chosen[1]},
        "uniform": {c: {"energy_nj": round(e / 1e3, 3), "steps": s} for c, (e, s) in uniform.items()},
        "stages": {n: {"code": c, "steps": choice.costs[n][c].steps, "sops": round(choice.costs[n][c].sops),
                       "energy_nj": round(choice.costs[n][c].energy_pj / 1e3, 3),
                       "candidates": {k: {"energy_nj": round(v.energy_pj / 1e3, 3), "steps": v.steps}
                                      for k, v in choice.costs[n].items()}}
                   for n, c in choice.codes.items()},
        "graded_sop_pj": energy.get("graded_sop_pj"),
    }


def products(net: Network) -> dict:
    """Per static stage, the largest |partial sum| its cores can produce (proved at tiling from
    the weights and the spike code: what leaves its output cores, reduce cores included) and the
    cheapest arithmetic exact for it (`sdllm.models.integer.products`)."""
    out = {}
    for name, node in net.nodes.items():
        if node.kind is NodeKind.STATIC:
            bound = max(c.payload_bound for c in net.cores_of(name) if c.sends_node_outputs)
            quant = net.model.quant
            w_max = qmax(node.attrs["weight_bits"])
            out[name] = {"bound": bound, "type": exact_type(bound, w_max, quant.of_stage(name).q_max)}
    return out


def format_report(r: dict) -> str:
    p = r["placement"]
    lines = [
        f"sdllm core-mapping report — target {r['target']} ({r['system']}){' — synthetic model' if r['synthetic'] else ''}",
        f"cores used {r['cores_used']:,} of {r['cores_available']:,} on {r['chips_used']} chip(s); lower bound "
        f"{r['cores_lower_bound']:,} (resource totals / per-core capacity): {r['cores_over_bound']:.3f} x the bound",
        f"{r['reduce_cores']} reduce cores; {r['compressed_tables']} routing tables compressed to runs",
        f"placement {p['method']} (spike rates: {p['rates']}): {p['spike_hops_per_token']:,.0f} spike-hops and "
        f"{p['chip_crossings_per_token']:,.0f} chip crossings per token; greedy baseline {p['greedy_spike_hops_per_token']:,.0f} "
        f"and {p['greedy_chip_crossings_per_token']:,.0f}: {p['hops_vs_greedy']:.3f} x the baseline's spike-hops",
        f"chip-to-chip links: {len(r['link_loads'])} carry traffic, the busiest {p['max_link_load']:,.0f} packets per token"
        + "".join(f"; {a}->{b}: {x:,.0f}" for a, b, x in sorted(r["link_loads"], key=lambda e: -e[2])[:3]),
        f"spike trains of up to {r['timesteps_per_spike_train']} steps ({r.get('precision', '')}); {r['timesteps_per_token']} timesteps per token "
        f"(~{r['token_latency_us']:.0f} us at the config's step time)",
        f"layer-pipelined prompt: a position every {r['initiation_interval']} steps ({r['prompt_tokens_per_s']:,.0f} prompt tokens/s); "
        f"time to the first new token "
        + ", ".join(f"{us / 1e3:,.2f} ms after a {n}-token prompt"
                    for n, us in sorted(r["time_to_first_token_us"].items(), key=lambda e: int(e[0]))),
        *([f"generation: {r['generated_tokens_per_s']:,.0f} new tokens/s for one sequence; a batch of up to "
           f"{r['batch_at_full_rate']} sequences takes turns in the pipeline at that rate each "
           f"({r['batch_at_full_rate'] * r['generated_tokens_per_s']:,.0f} new tokens/s in all; each its own positions of the context)"]
          if "batch_at_full_rate" in r else []),
        "",
    ]
    if len(r["cores"]) <= CORE_TABLE_MAX:
        lines.append(f"{'id':>5} {'core':<24} {'type':<12} {'chip':>4} {'xy':>7} {'neurons':>8} {'axons':>6} {'routes':>7} "
                     f"{'syn bits':>10} {'syn%':>6} {'neur%':>6}")
        for c in r["cores"]:
            xy = f"{c['position'][0]},{c['position'][1]}" + (f"+{c['span'] - 1}" if c["span"] > 1 else "")
            lines.append(
                f"{c['id']:>5} {c['name']:<24} {c['type']:<12} {c['chip']:>4} {xy:>7} {c['neurons']:>8} {c['axons_in']:>6} "
                f"{c['table_entries']:>6}{'*' if c['table_compressed'] else ' '} {c['synapse_bits']:>10,} "
                f"{100 * c['synapse_util']:>5.1f}% {100 * c['neuron_util']:>5.1f}%"
            )
        lines.append("(* routing table compressed to runs)")
    else:
        lines.append(f"({len(r['cores']):,} logical cores: the per-core table is in report.json)")
    lines += ["", "per chip:"]
    for c in r["chips"][:CORE_TABLE_MAX]:
        lines.append(f"  chip {c['chip']}: {c['cores']} cores ({100 * c['core_util']:.1f}%), "
                     f"{c['synapse_bits']:,} synapse bits ({100 * c['synapse_util']:.1f}%), {c['neurons']:,} neurons")
    if len(r["chips"]) > CORE_TABLE_MAX:
        lines.append(f"  ... {len(r['chips']) - CORE_TABLE_MAX} more chips in report.json")
    lines += ["", "per layer:"]
    for c in r["layers"]:
        lines.append(f"  layer {c['layer']}: {c['cores']} cores (lower bound {c['lower_bound']}), "
                     f"{c['synapse_bits']:,} synapse bits, {c['neurons']:,} neurons")
    kinds = {}
    for p in r.get("products", {}).values():
        kinds.setdefault(p["type"], []).append(p["bound"])
    lines += ["", "exact products (largest |partial sum| of a stage, proved from its weights and spike code): "
              + "; ".join(f"{len(b)} stages as {t} (bounds up to {max(b):,})" for t, b in sorted(kinds.items()))]
    g = r.get("graded")
    if g:
        res = g["residual"]
        carry = "one graded spike" if res["pieces"] == 1 else f"{res['pieces']} graded spikes of {res['piece_bits']} bits"
        lines += ["", f"graded hand-offs (payload {g['payload_bits']} bits: up to {g['payload_max']:,}): residual "
                  f"{res['bits']}-bit with {res['frac_bits']} fractional bits (saturates at ±{res['saturates_at']:,.0f}), "
                  f"{carry} per channel (up to {res['largest_piece']:,}); embedding up to {g['embedding']:,}; "
                  f"head ratio up to {g['ratio']:,}; KV writes up to {g['kv_writes']:,}; stage sums up to "
                  f"{g['stage_sums']['max']:,} ({g['stage_sums']['stage']})"]
    c = r.get("codes")
    if c:
        per_kind = {}
        for name, s in c["stages"].items():
            per_kind.setdefault(stages.stage_of(name).name, {}).setdefault(s["code"], 0)
            per_kind[stages.stage_of(name).name][s["code"]] += 1
        chosen = c["chosen"]
        lines += ["", f"spike codes ({c['rule']}; events from {c['events_from']}): "
                  + "; ".join(f"{k} " + ", ".join(f"{code} x{n}" for code, n in v.items()) for k, v in per_kind.items()),
                  f"  chosen: {chosen['energy_nj']:,.1f} nJ and {chosen['steps']} steps per token (stage energy: synaptic ops, "
                  f"neuron updates, packets); one code everywhere: "
                  + "; ".join(f"{k} {v['energy_nj']:,.1f} nJ, {v['steps']} steps" for k, v in c["uniform"].items())]
    lines += ["", "schedule (phases within a token; spikes received first..last, in the input's code):"]
    for name, s in r["stages"].items():
        lines.append(f"  {name:<12} {s['first']:>5} .. {s['last']:<5} {s.get('code', '')}")
    return "\n".join(lines) + "\n"
