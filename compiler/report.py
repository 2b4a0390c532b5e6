"""The core-mapping report: per core, per chip, per layer, and the timestep schedule."""

from collections import defaultdict

from sdllm.compiler.ir import Network
from sdllm.compiler.tile import lower_bound


def build_report(net: Network) -> dict:
    lim, hw = net.hw.core, net.hw
    cores = []
    for c in net.cores:
        if c.type == "host_io":
            continue
        cores.append({
            "id": c.id, "name": c.name, "type": c.type, "layer": c.layer, "chip": c.chip, "position": list(c.position),
            "neurons": c.n_neurons, "axons_in": c.n_axons, "routes_out": c.n_routes,
            "synapse_entries": c.synapse_entries, "synapse_bits": c.synapse_bits,
            "synapse_util": round(c.synapse_bits / lim.synapse_memory_bits, 4),
            "neuron_util": round(c.n_neurons / lim.max_neurons, 4),
        })
    chips = defaultdict(lambda: {"cores": 0, "synapse_bits": 0, "neurons": 0})
    layers = defaultdict(lambda: {"cores": 0, "synapse_bits": 0, "neurons": 0})
    for c in cores:
        for bucket in (chips[c["chip"]], layers["head" if c["layer"] == net.blob["config"]["n_layers"] else c["layer"]]):
            bucket["cores"] += 1
            bucket["synapse_bits"] += c["synapse_bits"]
            bucket["neurons"] += c["neurons"]
    for k, v in chips.items():
        v["chip"] = k
        v["core_util"] = round(v["cores"] / hw.cores_per_chip, 4)
        v["synapse_util"] = round(v["synapse_bits"] / (hw.cores_per_chip * lim.synapse_memory_bits), 4)
    s = net.schedule
    bound = sum(lower_bound(net).values())
    return {
        "target": hw.name,
        "cores_used": len(cores),
        "cores_lower_bound": bound,
        "cores_over_bound": round(len(cores) / bound, 4),
        "cores_available": hw.total_cores,
        "chips_used": len(chips),
        "timesteps_per_spike_train": s["timesteps_per_spike_train"],
        "timesteps_per_token": s["period"],
        "token_latency_us": s["period"] * hw.timestep_us,
        "cores": cores,
        "chips": [chips[k] for k in sorted(chips)],
        "layers": [dict(layer=str(k), **layers[k]) for k in sorted(layers, key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0))],
        "stages": s["stages"],
    }


def format_report(r: dict) -> str:
    lines = [
        f"sdllm core-mapping report — target {r['target']}",
        f"cores used {r['cores_used']} of {r['cores_available']} on {r['chips_used']} chip(s); lower bound "
        f"{r['cores_lower_bound']} (resource totals / per-core capacity): {r['cores_over_bound']:.3f} x the bound",
        f"T = {r['timesteps_per_spike_train']} steps per spike train; {r['timesteps_per_token']} timesteps per token "
        f"(~{r['token_latency_us']:.0f} us at the config's step time)",
        "",
        f"{'id':>4} {'core':<22} {'type':<12} {'chip':>4} {'xy':>7} {'neurons':>8} {'axons':>6} {'routes':>6} "
        f"{'syn bits':>10} {'syn%':>6} {'neur%':>6}",
    ]
    for c in r["cores"]:
        xy = f"{c['position'][0]},{c['position'][1]}"
        lines.append(
            f"{c['id']:>4} {c['name']:<22} {c['type']:<12} {c['chip']:>4} {xy:>7} {c['neurons']:>8} {c['axons_in']:>6} "
            f"{c['routes_out']:>6} {c['synapse_bits']:>10,} {100 * c['synapse_util']:>5.1f}% {100 * c['neuron_util']:>5.1f}%"
        )
    lines += ["", "per chip:"]
    for c in r["chips"]:
        lines.append(f"  chip {c['chip']}: {c['cores']} cores ({100 * c['core_util']:.1f}%), "
                     f"{c['synapse_bits']:,} synapse bits ({100 * c['synapse_util']:.1f}%), {c['neurons']:,} neurons")
    lines += ["", "per layer:"]
    for c in r["layers"]:
        lines.append(f"  layer {c['layer']}: {c['cores']} cores, {c['synapse_bits']:,} synapse bits, {c['neurons']:,} neurons")
    lines += ["", "schedule (phases within a token; spikes received first..last):"]
    for name, s in r["stages"].items():
        lines.append(f"  {name:<12} {s['first']:>5} .. {s['last']:<5}")
    return "\n".join(lines) + "\n"
