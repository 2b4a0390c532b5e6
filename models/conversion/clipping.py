"""Membrane-potential clipping, calibrated: the SDLLM paper's third mechanism.

A dead zone θ at a quantisation point sends no spike for |q| <= θ: the encoder's membrane must
pass θ before it fires, so the many small activations of a layer stay silent. Where that is
cheap differs per point, so θ is chosen per point on calibration text under a fidelity budget:
greedily, each round raises by one the θ that saves the most synaptic operations per unit of
perplexity it costs, as long as the calibration perplexity stays within (1 + budget) of the
unclipped model's. Everything is measured with the integer reference — the exact network that
runs, its own SOP counts — on a few calibration windows.
"""

import dataclasses
import math

import numpy as np

from sdllm import stages
from sdllm.formats.model import ModelFile
from sdllm.models.integer.likelihood import nll
from sdllm.models.integer.reference import IntegerSDLLM

SEARCH_WINDOWS = 2


def _nll(logits_fx, targets) -> float:
    return float(nll(logits_fx, targets).sum())


def _score(model: ModelFile, rows: np.ndarray) -> tuple:
    """(perplexity, SOPs per token) of the integer reference on rows."""
    ref = IntegerSDLLM(model)
    total, sops, n = 0.0, 0, 0
    for row in rows:
        ref.reset()
        logits, spikes = ref.forward(row[:-1])
        total += _nll(logits, row[1:])
        sops += sum(int(s.sum()) for s in ref.stage_sops(spikes, np.arange(len(row) - 1)).values())
        n += len(row) - 1
    return math.exp(total / n), sops / n


def with_thetas(model: ModelFile, thetas: dict) -> ModelFile:
    return model.with_(quant=dataclasses.replace(model.quant, thetas=tuple(sorted(thetas.items()))))


def calibrate_dead_zones(model: ModelFile, rows: np.ndarray, budget: float, progress: bool = False):
    """(thetas ((point, θ), ...), the search's trace [(thetas, perplexity, SOPs per token)]): the
    per-point dead zones within `budget` (relative perplexity increase on `rows`)."""
    from tqdm import tqdm

    rows = rows[:SEARCH_WINDOWS]
    spec = model.quant
    thetas = {p.name: spec.at(p, None).theta for p in stages.POINTS.values() if p.spiked}
    ppl0, sops0 = _score(model, rows)
    trace = [(dict(thetas), ppl0, sops0)]
    limit = ppl0 * (1 + budget)
    current = (ppl0, sops0)
    bar = tqdm(desc="dead zones", unit="trial", disable=None if progress else True, leave=False)
    while True:
        best = None
        for name, theta in thetas.items():
            if theta + 1 >= min(spec.at(stages.POINTS[name], i).step_max for i in (None, *range(model.config.n_layers))):
                continue
            trial = {**thetas, name: theta + 1}
            ppl, sops = _score(with_thetas(model, trial), rows)
            bar.update()
            if ppl > limit or sops >= current[1]:
                continue
            gain = (current[1] - sops) / max(ppl - current[0], 1e-9 * current[0])
            if best is None or gain > best[0]:
                best = (gain, trial, ppl, sops)
        if best is None:
            break
        _, thetas, *current = best
        current = tuple(current)
        trace.append((dict(thetas), *current))
        bar.set_postfix(ppl=f"{current[0]:.2f}", sops=f"{current[1] / 1e6:.0f}M")
    bar.close()
    return tuple(sorted((k, v) for k, v in thetas.items() if v)), trace

