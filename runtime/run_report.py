"""The run report as data (run.json; `runtime.run_page` draws it as run.html): where a run's
synaptic operations and spikes went — per core on each chip's mesh, per stage, per layer — its
energy estimate (synaptic ops, neuron updates, NoC), the chip-to-chip traffic the run measured,
and a raster of one token's phases (`runtime.trace`).

Every figure is per token (the mean over the run's positions). A core's "spikes" are the
non-zero values it sends: a neuron unit's spikes (each stage's input trains), a synapse, KV or
reduce core's graded spikes (its sums); its firing rate is spikes per neuron per timestep. The
same run gives the same report, byte for byte (no wall times in it).
"""

import json

import numpy as np

from sdllm import stages
from sdllm.runtime import energy
from sdllm.stages import CoreType

FORMAT = "sdllm-run-report"
FORMAT_VERSION = 1


def _stage_name(node: str) -> str:
    return stages.stage_of(node).name if node.rsplit(".", 1)[-1] in stages.STAGES else stages.NodeKind.UNIT.value


def _layer_name(layer: int, cfg) -> str:
    return stages.HEAD.name if layer >= cfg.n_layers else str(layer)


def run_report(build, result, prompt_tokens, backend: str, sampler, trace=None, text: str | None = None) -> dict:
    """The report of `result` (a `RunResult` of `build`), with `trace` (a `TokenTrace`) as its raster."""
    n_pos = len(result.logits)
    period = build.schedule.period
    est = energy.estimate(build, result)
    cores, by_stage, by_layer = [], {}, {}
    for c in build.cores:
        if c.type == CoreType.HOST:
            continue
        sops = float(np.mean(result.core_sops[c.name])) if n_pos else 0.0
        spikes = float(np.mean(result.core_spikes[c.name])) if result.core_spikes is not None and n_pos else None
        cores.append({
            "name": c.name, "type": c.type, "node": c.node, "layer": c.layer, "chip": c.chip,
            "positions": [list(p) for p in build.doc["cores"][c.id]["positions"]], "neurons": c.n_neurons,
            "sops_per_token": sops, "spikes_per_token": spikes,
            "firing_rate": None if spikes is None else spikes / max(c.n_neurons * period, 1),
        })
        for bucket in (by_stage.setdefault(_stage_name(c.node), {}), by_layer.setdefault(_layer_name(c.layer, build.config), {})):
            bucket["cores"] = bucket.get("cores", 0) + c.span
            bucket["sops_per_token"] = bucket.get("sops_per_token", 0.0) + sops
            if spikes is not None:
                bucket["spikes_per_token"] = bucket.get("spikes_per_token", 0.0) + spikes
    order = [s.name for s in (*stages.LAYER, stages.HEAD)] + [stages.NodeKind.UNIT.value]
    report = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "build": build.path, "target": build.hw.name, "backend": backend, "stepped": result.stepped,
        "sampling": sampler.to_dict(),
        "prompt_tokens": len(prompt_tokens), "generated_tokens": len(result.tokens) - len(prompt_tokens),
        "generated_ids": [int(t) for t in result.tokens[len(prompt_tokens):]], "generated_text": text,
        "positions": n_pos, "period": period, "timesteps": result.timesteps,
        "mesh": list(build.hw.mesh), "chips": sorted({c.chip for c in build.cores if c.chip >= 0}),
        "sops_per_token": est["sops_per_token"],
        "spikes_per_token": None if result.core_spikes is None else float(sum(c["spikes_per_token"] for c in cores)),
        "energy": {k: est[k] for k in ("sop_energy_nj", "neuron_energy_nj", "noc_energy_nj", "energy_per_token_uj",
                                        "latency_per_token_ms", "prompt_interval_ms", "neuron_updates_per_token",
                                        "binary_sops_per_token", "graded_sops_per_token", "sdllm_45nm_uj",
                                        "dense_fp32_45nm_uj", "dense_fp16_45nm_uj", "dense_int8_45nm_uj",
                                        "integer_ann_45nm_uj", "weights_sram_45nm_uj", "weights_dram_45nm_uj")},
        "interval": build.schedule.interval,
        "noc": None if result.traffic is None else {k: est[k] for k in ("packets_per_token", "packet_hops_per_token",
                                                                         "chip_crossings_per_token")},
        "chip_traffic": None if result.chip_packets is None else
        [[a, b, n / max(n_pos, 1)] for a, b, n in result.chip_packets if n],
        "cores": cores,
        "stages": [{"stage": k, **by_stage[k]} for k in order if k in by_stage],
        "layers": [{"layer": k, **v} for k, v in sorted(by_layer.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0))],
        "raster": None if trace is None else raster(build, trace),
    }
    return report


def raster(build, trace) -> dict:
    """The traced token's phases: what each core sent per step ("sent": [core index, phase, values
    sent], non-zero ones only), the unit's spikes ([phase, output, sign]), the stage windows."""
    windows = build.schedule.stages
    return {
        "position": trace.position, "cores": trace.cores,
        "sent": np.column_stack([*np.nonzero(trace.sent), trace.sent[np.nonzero(trace.sent)]]).tolist(),
        "unit": trace.unit, "unit_segments": {k: list(v) for k, v in trace.unit_segments.items()},
        "spikes": trace.spikes.tolist(),
        "windows": [{"node": node, "first": w.first, "last": w.last}
                    for node, w in sorted(windows.items(), key=lambda kv: kv[1].first)],
    }


def to_json(report: dict) -> str:
    return json.dumps(report, sort_keys=True, indent=1) + "\n"


def write(out_dir: str, report: dict, flag: str = "") -> list:
    """run.json and run.html into out_dir (created if missing), each in one atomic step; returns their paths."""
    import os

    from sdllm import outputs
    from sdllm.runtime.run_page import format_html

    outputs.make_report_directory(out_dir, flag)
    paths = [os.path.join(out_dir, "run.json"), os.path.join(out_dir, "run.html")]
    for path, text in zip(paths, (to_json(report), format_html(report))):
        outputs.write_file(text.encode("utf-8"), path, flag)
    return paths
