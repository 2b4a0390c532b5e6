"""A perplexity budget in, the cheapest bits out (issue 23): bits per quantisation point and per
layer, activations and weights, chosen from measurements.

1. One calibration pass converts the spec (the uniform W4A4 default, say) and, from the same
   statistics, every alternative a candidate needs at HIGH_BITS: each static stage's GPTQ weights
   and each γ point's γ (`convert.convert_with_alternatives`).
2. The budget's windows are windows of the calibration text that the conversion did not fit to
   (GPTQ and γ flatter the windows they were fitted on, so a budget met there is missed on held-out
   text), split in two (`split_rows`): the first half ranks the candidates, the second measures
   (a choice measured on the windows it was ranked on flatters itself too). On the second, the
   integer reference (what the chip equals bit for bit) measures the perplexity of the spec, the
   synaptic operations per token of every stage with its inputs and, separately, its weights at
   HIGH_BITS (each candidate's cost), and the perplexity of every candidate at HIGH_BITS at once:
   the best any allocation reaches. A budget below that is one error line, never a silent best
   effort.
3. Sensitivities, on the first half: the fake-quant model (the float model with the SDLLM's
   quantisers, prepared once) with every candidate raised measures the perplexity with one
   candidate lowered back at a time — a linear layer's input in one layer (q/k/v, o, gate/up,
   down, the LM head) or one static stage's weights — from the residual stream entering the
   candidate's layer (`Sensitivity`). Lowered alone among 8-bit neighbours, a point's own damage
   stands out; raised alone among 4-bit ones it drowns in theirs (on SmolLM2 the raise-one order
   needed 1.15x the SOPs for the held-out ratio this order reaches at 1.10x).
4. Greedy: candidates in order of sensitivity (log ratio) per unit of cost (SOPs per token,
   or with a target the hw config's energy: SOPs x sop_pj + spikes x spike_in_tile_pj), free ones
   first. The ratio of a prefix is predicted from the cumulative sensitivity, interpolated between
   the prefixes measured so far (`Prediction`: the gains overlap, so they do not simply add up).
5. Measured checks of prefixes with the integer reference narrow down the shortest prefix within
   the budget (the shortest predicted within it next, or the middle when a check did not halve the
   interval; prefixes of the candidates that help before any longer one), until the candidates
   between the longest prefix over the budget and the shortest within it cost at most STOP_SHARE
   of the start's cost, or MAX_CHECKS checks. Where the boundary is one costly candidate that lands
   well under the budget, a shorter prefix before it is narrowed down the same way
   (`with_shorter_prefix`).

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
MAX_CHECKS = 12
STOP_SHARE = 0.01  # the search stops when the cheapest prefix within the budget is known to within this share of the start's cost
ACT_POINTS = (stages.ATTN_IN, stages.ATTN_OUT, stages.MLP_IN, stages.MLP_ACT)  # the linear layers' inputs


class BudgetUnreachable(SdllmError, ValueError):
    """No allocation of the candidate bits reaches the budget."""


@dataclasses.dataclass
class Candidate:
    kind: str  # "act": a linear layer's input in one layer; "weight": one static stage's weights
    name: str  # its tap ('L3.down', 'head') or node ('L3.o', 'head')
    log_gain: float = 0.0  # log(perplexity with it alone lowered / with every candidate raised), fake-quant
    cost: float = 0.0  # SOPs (or pJ) per token it adds

    def first_layer(self, n_layers: int) -> int:
        """The first layer it changes (n_layers: the head)."""
        _, layer = stages.parse_tap(self.name) if self.kind == "act" else stages.parse_node(self.name)
        return n_layers if layer is None else layer

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


class Sensitivity:
    """Fake-quant perplexity on fixed rows of a model with one candidate changed, from the model's
    residual stream entering the candidate's first layer (the layers before it are the model's:
    recomputing them would give the same numbers; on SmolLM2 this halves the work)."""

    def __init__(self, fq, rows: np.ndarray):
        self.fq, self.n_layers = fq, fq.cfg.n_layers
        self.rows = torch.from_numpy(np.asarray(rows))
        with torch.no_grad():
            self.entries = [fq.residuals(row[None, :-1]) for row in self.rows]

    def perplexity(self, first: int = 0) -> float:
        import torch.nn.functional as F

        total = 0.0
        with torch.no_grad():
            for row, xs in zip(self.rows, self.entries):
                total += F.cross_entropy(self.fq.forward_from(first, xs[first])[0].double(), row[1:], reduction="sum").item()
        return math.exp(total / (self.rows.shape[0] * (self.rows.shape[1] - 1)))


class Prediction:
    """The calibration ratio of the first k candidates raised, predicted from their one-at-a-time
    log gains. The gains overlap (two raised points do not gain the sum of their gains), so the
    log ratio is interpolated linearly in the cumulative gain between measured prefixes: at the
    start k = 0, at the end k = `helpful` (every candidate that helps) the ratio with every
    candidate raised, and every prefix the checks measure."""

    def __init__(self, gains, base_ratio: float, best_ratio: float):
        self.cumulative = np.concatenate([[0.0], np.cumsum(np.maximum(gains, 0.0))])
        self.helpful = int(np.sum(np.asarray(gains) > 0))
        self.measured = {0: math.log(base_ratio), self.helpful: math.log(best_ratio)}

    def measure(self, k: int, ratio: float):
        if k <= self.helpful:
            self.measured[k] = math.log(ratio)

    def __call__(self, k: int, extra: float = 0.0) -> float:
        """The ratio predicted for the first k candidates (and candidates outside them gaining `extra`)."""
        return self.at_gain(self.cumulative[min(k, self.helpful)] + extra)

    def at_gain(self, gain: float) -> float:
        """The ratio predicted for candidates whose gains sum to `gain` (a prefix, or any set of them)."""
        ks = sorted(self.measured)
        return math.exp(float(np.interp(gain, self.cumulative[ks], [self.measured[j] for j in ks])))

    def shortest(self, lo: int, hi: int, budget: float) -> int:
        """The shortest prefix strictly between lo and hi predicted within the budget (hi - 1 if none)."""
        k = self.first_within(lo, hi, budget)
        return hi - 1 if k is None else k

    def first_within(self, lo: int, hi: int, budget: float, extra: float = 0.0) -> int | None:
        """The shortest prefix strictly between lo and hi predicted within the budget, with `extra` gain beside it."""
        return next((k for k in range(lo + 1, hi) if self(k, extra) <= budget), None)


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


def split_rows(rows: np.ndarray) -> tuple:
    """(sensitivity rows, check rows): the first half of the budget's windows ranks the candidates,
    the second half measures; a choice measured on the windows it was ranked on flatters itself."""
    rows = np.asarray(rows)
    if len(rows) < 2:
        raise SdllmError(f"the budget search: needs at least 2 windows (one to rank candidates on, one to "
                         f"measure on), got {len(rows)}")
    half = len(rows) // 2
    return rows[:half], rows[half:]


def search(float_model, base: ModelFile, alt: dict, budget_rows: np.ndarray, budget: float, energy: dict | None = None,
           target: str = "", progress: bool = False, log=print, fit=None) -> ModelFile:
    """The cheapest allocation found within `budget` x float perplexity: `base` with candidates
    raised to alt['bits'], recorded in its `budget` field. budget_rows: windows the conversion did
    not fit to, split by `split_rows`. fit: with a target, what fits the choice to its cores
    (`target_fit.TargetFit`), called where the search returns."""
    from tqdm import tqdm

    from sdllm.models.conversion.fakequant import FakeQuantSDLLM

    t0 = time.time()
    sense_rows, rows = split_rows(budget_rows)
    cost = Cost(energy)
    cands = candidates(base, alt["bits"])
    act = [c for c in cands if c.kind == "act"]
    weight = [c for c in cands if c.kind == "weight"]
    float_ppl = float_perplexity(float_model, rows)
    log(f"budget {budget}: {len(cands)} candidates ({len(act)} linear-layer inputs, {len(weight)} stages' weights) at "
        f"{alt['bits']} bits, ranked on {len(sense_rows)} and measured on {len(rows)} other windows of the calibration "
        f"text, none fitted to; float perplexity {float_ppl:.3f}")

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
        return model if fit is None else fit(model, base, alt, rows, [], [], cost, None, log)

    for c in cands:  # cost: the stage's own change (the rest of the network keeps its integers)
        sops, spikes = (act_sops, act_spikes) if c.kind == "act" else (w_sops, w_spikes)
        c.cost = cost(sops, spikes, [c.node]) - cost(base_sops, base_spikes, [c.node])
    top = assemble(base, alt, cands)
    fq = FakeQuantSDLLM(float_model, top)
    sense = Sensitivity(fq, sense_rows)
    fq_top = sense.perplexity(sense.n_layers)
    bar = tqdm(cands, desc="sensitivities", unit="candidate", disable=None if progress else True, leave=False)
    for c in bar:
        fq.retarget(assemble(base, alt, [d for d in cands if d is not c]), [c.name] if c.kind == "weight" else ())
        c.log_gain = math.log(sense.perplexity(c.first_layer(sense.n_layers)) / fq_top)
        fq.retarget(top, [c.name] if c.kind == "weight" else ())
    helpful = sorted((c for c in cands if c.log_gain > 0),
                     key=lambda c: (c.cost > 0, -c.log_gain / max(c.cost, 1e-9) if c.cost > 0 else -c.log_gain, c.name))
    order = helpful + sorted((c for c in cands if c.log_gain <= 0), key=lambda c: (-c.log_gain, c.name))
    log(f"  sensitivities: {len(helpful)} of {len(cands)} candidates raise the fake-quant perplexity when lowered alone "
        f"from every candidate raised; most per cost: "
        + ", ".join(f"{c.name}{' weights' if c.kind == 'weight' else ''} {math.exp(c.log_gain):.3f}x for {c.cost:+,.0f}"
                    for c in helpful[:4]))

    # the shortest prefix of `order` within the budget: measured prefixes narrow (lo, hi], the next
    # one the shortest predicted within the budget, or the middle when the last check did not halve
    # the interval (neither past the candidates that help while a prefix of them may do); stops when
    # the candidates between lo and hi cost at most STOP_SHARE of the start's cost, or after MAX_CHECKS
    predicted = Prediction([c.log_gain for c in order], base_ratio, best_ratio)
    found = {len(order): (best_ratio, best_sops, best_spikes, best_ratio)}
    spent = np.concatenate([[0.0], np.cumsum([max(c.cost, 0.0) for c in order])])  # each prefix's own costs

    def pick(lo, hi, halved):
        top = min(hi, predicted.helpful + 1) if lo < predicted.helpful else hi  # prefixes of helpful ones first
        return predicted.shortest(lo, top, budget) if halved and lo < predicted.helpful else (lo + top) // 2

    def within(k):
        guess = predicted(k)
        ppl, sops, spikes = integer_measure(assemble(base, alt, order[:k]), rows)
        ratio = ppl / float_ppl
        found[k] = (ratio, sops, spikes, guess)
        predicted.measure(k, ratio)
        log(f"  check {len(found) - 1}: {k} raised, predicted {guess:.3f} x float, measured {ratio:.3f} "
            f"({cost(sops, spikes):,.0f} {cost.unit} per token)")
        return ratio <= budget

    lo, hi, check = narrow(0, len(order), pick, within, lambda lo, hi: spent[hi] - spent[lo] <= STOP_SHARE * base_cost)
    measured, sops, spikes, predicted_ratio = found[hi]
    chosen, rest = order[:hi], order[hi:]
    if hi - lo == 1 and hi > 1 and measured < budget:
        chosen, rest, (measured, sops, spikes, predicted_ratio), more = with_shorter_prefix(
            order, hi, (measured, sops, spikes, predicted_ratio), spent, base_cost, predicted, budget,
            lambda chosen: integer_measure(assemble(base, alt, chosen), rows), float_ppl, cost, log)
        check += more
    model = assemble(base, alt, chosen)
    log(f"  taken: {len(chosen)} of {len(order)} candidates")
    energy_now = cost(sops, spikes)
    record.update(predicted_ratio=predicted_ratio, measured_ratio=measured, energy=energy_now, checks=check)
    assert set(record) == set(BUDGET_FIELDS), record
    log(f"  chosen: {model.quant.precision()}")
    log(f"  calibration perplexity {measured:.3f} x float (predicted {predicted_ratio:.3f}, budget {budget:g}); "
        f"{energy_now:,.0f} {cost.unit} per token = {energy_now / base_cost:.3f} x the start's "
        f"({base.quant.describe()}: {base_ratio:.3f} x float); {time.time() - t0:.0f} s")
    model = model.with_(budget=record)
    return model if fit is None else fit(model, base, alt, rows, chosen, rest, cost, predicted, log)


def with_shorter_prefix(order, hi, at_hi, spent, base_cost, predicted, budget, measure, float_ppl, cost, log):
    """The boundary found is one candidate, and with it the ratio is under the budget: a lumpy
    candidate (the LM head's input costs as much as a dozen layers' points) whose gain makes those
    before it partly unneeded. The shortest prefix of order[:hi - 1] that, with order[hi - 1],
    is within the budget, narrowed as the prefixes were. Returns (chosen, the rest in order,
    (ratio, SOPs, spikes, predicted ratio), checks made)."""
    last = order[hi - 1]
    lump = max(last.log_gain, 0.0)
    found = {hi - 1: at_hi}

    def pick(lo, top, halved):
        j = predicted.first_within(lo, top, budget, lump) if halved else None
        return (lo + top) // 2 if j is None else j

    def within(j):
        guess = predicted(j, lump)
        ppl, sops, spikes = measure(order[:j] + [last])
        ratio = ppl / float_ppl
        found[j] = (ratio, sops, spikes, guess)
        log(f"  check with {last.name}{' weights' if last.kind == 'weight' else ''} and the first {j} before it: "
            f"predicted {guess:.3f} x float, measured {ratio:.3f} ({cost(sops, spikes):,.0f} {cost.unit} per token)")
        return ratio <= budget

    _, top, checks = narrow(0, hi - 1, pick, within, lambda lo, top: spent[top] - spent[lo] <= STOP_SHARE * base_cost)
    return order[:top] + [last], order[top:hi - 1] + order[hi:], found[top], checks


def narrow(lo: int, hi: int, pick, within, close_enough=lambda lo, hi: False) -> tuple:
    """Bisection of prefixes: lo is known over the budget (or the start), hi within it. pick(lo, hi,
    halved) -> the next prefix strictly between them (halved: whether the last check halved the
    interval), within(k) -> whether prefix k, measured, is within the budget. Stops when hi follows
    lo, when close_enough(lo, hi), or after MAX_CHECKS checks. Returns (lo, hi, checks made)."""
    checks, halved = 0, True
    while hi - lo > 1 and not close_enough(lo, hi) and checks < MAX_CHECKS:
        checks += 1
        k = pick(lo, hi, halved)
        width = hi - lo
        lo, hi = (lo, k) if within(k) else (k, hi)
        halved = hi - lo <= width // 2
    return lo, hi, checks

