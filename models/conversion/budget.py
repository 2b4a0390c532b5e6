"""A perplexity budget in, the cheapest bits out (issue 23): bits per quantisation point and per
layer, activations and weights, chosen from measurements.

1. One calibration pass converts the spec (the uniform W4A4 default, say) and, from the same
   statistics, every alternative a candidate needs at HIGH_BITS: each static stage's GPTQ weights
   and each γ point's γ (`convert.convert_with_alternatives`).
2. The integer reference (what the chip equals bit for bit) measures on the calibration windows
   the perplexity of the spec, and the synaptic operations per token of every stage with its
   inputs and, separately, its weights at HIGH_BITS — each candidate's cost — and the perplexity
   of every candidate at HIGH_BITS at once: the best any allocation reaches. A budget below that
   is one error line, never a silent best effort.
3. Sensitivities: the fake-quant model (the float model with the SDLLM's quantisers, prepared
   once) measures the calibration perplexity with one candidate raised at a time: a linear
   layer's input in one layer (q/k/v, o, gate/up, down, the LM head) or one static stage's weights.
4. Greedy: candidates in order of perplexity gained (log ratio) per unit of cost (SOPs per token,
   or with a target the hw config's energy: SOPs x sop_pj + spikes x spike_in_tile_pj), free ones
   first, added until the predicted ratio (the reference's own, times each added candidate's
   measured factor) is within the budget.
5. A measured check of the combination with the integer reference; if it misses, the prediction
   is corrected by the miss and more candidates are added (at most MAX_CHECKS checks).

Deterministic for a seed: the conversion is, and every measurement is a fixed computation on
fixed windows. The result records what was chosen, the predicted and measured ratios, and the
energy against the spec it started from (`ModelFile.budget`).
"""

import dataclasses
import math
import time

import numpy as np
import torch

from sdllm import stages
from sdllm.errors import SdllmError
from sdllm.formats.model import BUDGET_DEFAULTS, BUDGET_FIELDS, ModelFile
from sdllm.models.integer.likelihood import nll
from sdllm.models.integer.reference import IntegerSDLLM

HIGH_BITS = 8
MAX_CHECKS = 6
ACT_POINTS = (stages.ATTN_IN, stages.ATTN_OUT, stages.MLP_IN, stages.MLP_ACT)  # the linear layers' inputs


class BudgetUnreachable(SdllmError, ValueError):
    """No allocation of the candidate bits reaches the budget."""


@dataclasses.dataclass
class Candidate:
    kind: str  # "act": a linear layer's input in one layer; "weight": one static stage's weights
    name: str  # its tap ('L3.down', 'head') or node ('L3.o', 'head')
    log_gain: float = 0.0  # log(perplexity at the start / perplexity with it raised), fake-quant
    cost: float = 0.0  # SOPs (or pJ) per token it adds

    @property
    def node(self) -> str:
        """The stage whose synaptic operations it changes."""
        if self.kind == "weight":
            return self.name
        point, layer = stages.parse_tap(self.name)
        return next(s for s in (*stages.LAYER, stages.HEAD) if s.input is point).node(layer)


def candidates(model: ModelFile, high: int = HIGH_BITS) -> list:
    """Every point of every layer and every static stage the spec carries below `high` bits."""
    spec, cfg = model.quant, model.config
    out = [Candidate("act", p.tap(i)) for i in range(cfg.n_layers) for p in ACT_POINTS if spec.at(p, i).bits < high]
    if spec.at(stages.HEAD_IN, None).bits < high:
        out.append(Candidate("act", stages.HEAD_IN.tap(None)))
    out += [Candidate("weight", node) for node, stage, i in stages.static_stages(cfg) if spec.weights_at(stage, i) < high]
    return out


def assemble(base: ModelFile, alt: dict, chosen) -> ModelFile:
    """The base SDLLM with the chosen candidates at alt['bits']: their γ or weights from `alt`."""
    layer_bits, layer_weight_bits = dict(base.quant.layer_bits), dict(base.quant.layer_weight_bits)
    weights, scales, gamma = dict(base.weights), dict(base.scales_fx), dict(base.gamma)
    for c in chosen:
        if c.kind == "act":
            layer_bits[c.name] = alt["bits"]
            gamma[c.name] = alt["gamma"][c.name]
        else:
            layer_weight_bits[c.name] = alt["bits"]
            weights[c.name], scales[c.name] = alt["weights"][c.name], alt["scales"][c.name]
    spec = dataclasses.replace(base.quant, layer_bits=tuple(sorted(layer_bits.items())),
                               layer_weight_bits=tuple(sorted(layer_weight_bits.items())))
    return base.with_(quant=spec, weights=weights, scales_fx=scales, gamma=gamma)


def integer_measure(model: ModelFile, rows: np.ndarray) -> tuple:
    """(perplexity, {stage node: SOPs per token}, {stage node: spikes per token}) of the integer
    reference on rows, each stage's input in its reference code."""
    ref = IntegerSDLLM(model)
    total, n = 0.0, 0
    sops, spikes = {}, {}
    for row in rows:
        ref.reset()
        logits, q = ref.forward(row[:-1])
        total += float(nll(logits, row[1:]).sum())
        n += len(row) - 1
        for name, s in ref.stage_sops(q, np.arange(len(row) - 1)).items():
            sops[name] = sops.get(name, 0) + int(s.sum())
            spikes[name] = spikes.get(name, 0) + int(ref.spike_events(name, q[name]).sum())
    return math.exp(total / n), {k: v / n for k, v in sops.items()}, {k: v / n for k, v in spikes.items()}


def fake_perplexity(fq, rows: np.ndarray) -> float:
    import torch.nn.functional as F

    total = 0.0
    with torch.no_grad():
        for row in torch.from_numpy(np.asarray(rows)):
            total += F.cross_entropy(fq(row[None, :-1])[0].double(), row[1:], reduction="sum").item()
    return math.exp(total / (rows.shape[0] * (rows.shape[1] - 1)))


def float_perplexity(float_model, rows: np.ndarray) -> float:
    return fake_perplexity(float_model.eval(), rows)


class Cost:
    """Energy per token of a measurement: SOPs, or with a target's energy table (pJ) SOPs x sop_pj
    plus spikes x spike_in_tile_pj."""

    def __init__(self, energy: dict | None):
        self.energy = energy
        self.unit = "pJ" if energy else "SOPs"

    def __call__(self, sops: dict, spikes: dict, nodes=None) -> float:
        nodes = sops.keys() if nodes is None else nodes
        if not self.energy:
            return float(sum(sops[k] for k in nodes))
        return float(sum(sops[k] * self.energy["sop_pj"] + spikes[k] * self.energy["spike_in_tile_pj"] for k in nodes))


def search(float_model, base: ModelFile, alt: dict, calib_rows: np.ndarray, budget: float, energy: dict | None = None,
           target: str = "", progress: bool = False, log=print, fit=None) -> ModelFile:
    """The cheapest allocation found within `budget` x float perplexity on calib_rows: `base` with
    candidates raised to alt['bits'], recorded in its `budget` field. fit: with a target, what fits
    the choice to its cores (`target_fit.TargetFit`), called where the search returns."""
    from tqdm import tqdm

    from sdllm.models.conversion.fakequant import FakeQuantSDLLM

    t0 = time.time()
    rows = np.asarray(calib_rows)
    cost = Cost(energy)
    cands = candidates(base, alt["bits"])
    act = [c for c in cands if c.kind == "act"]
    weight = [c for c in cands if c.kind == "weight"]
    float_ppl = float_perplexity(float_model, rows)
    log(f"budget {budget}: {len(cands)} candidates ({len(act)} linear-layer inputs, {len(weight)} stages' weights) at "
        f"{alt['bits']} bits, measured on {len(rows)} calibration windows; float perplexity {float_ppl:.3f}")

    base_ppl, base_sops, base_spikes = integer_measure(base, rows)
    _, act_sops, act_spikes = integer_measure(assemble(base, alt, act), rows)
    _, w_sops, w_spikes = integer_measure(assemble(base, alt, weight), rows)
    best_ppl, best_sops, best_spikes = integer_measure(assemble(base, alt, cands), rows)
    base_cost = cost(base_sops, base_spikes)
    base_ratio, best_ratio = base_ppl / float_ppl, best_ppl / float_ppl
    log(f"  start ({base.quant.describe()}): {base_ratio:.3f} x float, {base_cost:,.0f} {cost.unit} per token; "
        f"every candidate at {alt['bits']} bits: {best_ratio:.3f} x float, {cost(best_sops, best_spikes):,.0f} {cost.unit}")
    if budget < best_ratio:
        raise BudgetUnreachable(f"--budget {budget:g}: below what any allocation reaches on the calibration text "
                                f"(the best, every candidate at {alt['bits']} bits: {best_ratio:.3f} x float)")
    record = {**BUDGET_DEFAULTS, "budget": float(budget), "objective": cost.unit, "target": target, "float_ppl": float_ppl,
              "default_ratio": base_ratio, "default_energy": base_cost, "windows": len(rows), "candidates": len(cands)}
    if base_ratio <= budget:
        log(f"  the start is within the budget: nothing raised ({time.time() - t0:.0f} s)")
        model = base.with_(budget={**record, "predicted_ratio": base_ratio, "measured_ratio": base_ratio,
                                   "energy": base_cost, "checks": 1})
        return model if fit is None else fit(model, base, alt, rows, [], [], cost, log)

    for c in cands:  # cost: the stage's own change (the rest of the network keeps its integers)
        sops, spikes = (act_sops, act_spikes) if c.kind == "act" else (w_sops, w_spikes)
        c.cost = cost(sops, spikes, [c.node]) - cost(base_sops, base_spikes, [c.node])
    fq = FakeQuantSDLLM(float_model, base)
    fq_base = fake_perplexity(fq, rows)
    bar = tqdm(cands, desc="sensitivities", unit="candidate", disable=None if progress else True, leave=False)
    for c in bar:
        fq.retarget(assemble(base, alt, [c]), [c.name] if c.kind == "weight" else ())
        c.log_gain = math.log(fq_base / fake_perplexity(fq, rows))
        fq.retarget(base, [c.name] if c.kind == "weight" else ())
    helpful = sorted((c for c in cands if c.log_gain > 0),
                     key=lambda c: (c.cost > 0, -c.log_gain / max(c.cost, 1e-9) if c.cost > 0 else -c.log_gain, c.name))
    order = helpful + sorted((c for c in cands if c.log_gain <= 0), key=lambda c: (-c.log_gain, c.name))
    log(f"  sensitivities: {len(helpful)} of {len(cands)} candidates lower the fake-quant perplexity "
        f"({fq_base / float_ppl:.3f} x float at the start); most per cost: "
        + ", ".join(f"{c.name}{' weights' if c.kind == 'weight' else ''} {math.exp(c.log_gain):.3f}x for {c.cost:+,.0f}"
                    for c in helpful[:4]))

    def predicted(k: int) -> float:
        return base_ratio * math.exp(-sum(c.log_gain for c in order[:k]))

    # the shortest prefix of `order` predicted within the budget (or the best predicted); then measured,
    # and if it misses, bisected between it and the whole list (measured: every candidate raised is within the budget)
    k = next((k for k in range(len(order) + 1) if predicted(k) <= budget), len(helpful))  # else the best predicted
    lo, hi = 0, len(order)  # hi: the shortest prefix measured within the budget so far; lo: the longest missing
    found = {len(order): (best_ratio, best_sops, best_spikes)}
    for check in range(1, MAX_CHECKS + 1):
        if k not in found:
            ppl, sops, spikes = integer_measure(assemble(base, alt, order[:k]), rows)
            found[k] = (ppl / float_ppl, sops, spikes)
        ratio, sops, spikes = found[k]
        log(f"  check {check}: {k} raised, predicted {predicted(k):.3f} x float, measured {ratio:.3f} "
            f"({cost(sops, spikes):,.0f} {cost.unit} per token)")
        if ratio <= budget:
            hi = k
            break
        lo = k
        if hi - lo <= 1:
            break
        k = (lo + hi + 1) // 2
    measured, sops, spikes = found[hi]
    chosen = order[:hi]
    model = assemble(base, alt, chosen)
    log(f"  taken: the first {hi} of {len(order)} candidates")
    predicted_ratio = predicted(hi)
    energy_now = cost(sops, spikes)
    record.update(predicted_ratio=predicted_ratio, measured_ratio=measured, energy=energy_now, checks=check)
    assert set(record) == set(BUDGET_FIELDS), record
    log(f"  chosen: {model.quant.precision()}")
    log(f"  calibration perplexity {measured:.3f} x float (predicted {predicted_ratio:.3f}, budget {budget:g}); "
        f"{energy_now:,.0f} {cost.unit} per token = {energy_now / base_cost:.3f} x the start's "
        f"({base.quant.describe()}: {base_ratio:.3f} x float); {time.time() - t0:.0f} s")
    model = model.with_(budget=record)
    return model if fit is None else fit(model, base, alt, rows, chosen, order[hi:], cost, log)
