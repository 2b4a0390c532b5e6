"""A budgeted choice that fits the target's cores (issue 23, `--budget R --target HW`).

Raised weights cost synapse memory, not spikes: 8-bit weights take twice a 4-bit block's bits, so
the search's cheapest allocation within the budget may need more cores than the target has. The
search (`budget.search`) hands its choice to a `TargetFit` where it returns; the count of cores
comes from a callback the API layer passes in (the compiler's own tiling and chip packing,
`sdllm.compiler.fit.cores_needed`: this layer never imports the compiler). It returns an object
with `cores_needed`, `cores_available`, `fits`, `node_cores` (per stage node) and
`describe(named=True)`.

1. The start (nothing raised) must fit (`check_start`, before the search): raising bits never
   frees a core, so if it does not, no allocation does.
2. The choice fits: kept as it is. Else raised weights are dropped (back to the start's bits) in
   order of least perplexity gain (the search's measured sensitivity) per core saved (each stage
   tiled at both bits), as many as the cores over say, re-counting until it fits.
3. The fitting allocation is measured with the integer reference on the search's windows. Within
   the budget: taken. Else the linear-layer inputs the search left out (free in cores) are added
   in the search's order, the shortest prefix within the budget found by bisection. If even all
   of them miss, `TargetTooSmall`: one line naming the target, its cores, the cores the budget's
   choice needs and the budget.

What was checked is recorded in the budget record: `fit` (a line), `cores_needed`, `cores_available`.
"""

from sdllm.errors import SdllmError
from sdllm.models.conversion.budget import assemble, integer_measure, narrow


class TargetTooSmall(SdllmError, ValueError):
    """No allocation within the budget found that fits the target's cores."""


class TargetFit:
    def __init__(self, cores, target: str):
        """cores: model -> its cores on the target (see the module's docstring); target: its name as the user gave it."""
        self.cores, self.target = cores, target
        self.start = None

    def check_start(self, base, budget: float) -> None:
        """Refuse before the search when even the start (nothing raised) does not fit."""
        self.start = self.cores(base)
        if not self.start.fits:
            raise TargetTooSmall(f"--target {self.target}: {self.start.cores_available:,} cores; the model needs "
                                 f"{self.start.cores_needed:,} with nothing raised ({base.quant.describe()}), so no "
                                 f"allocation within --budget {budget:g} fits")

    def __call__(self, model, base, alt, rows, chosen, rest, cost, predicted=None, log=print):
        """`model` (base with `chosen` raised, its budget record filled) fitted to the target; rest:
        the candidates the search did not take, in its order; predicted: the search's `Prediction`
        (None when nothing was raised), which predicts the fitted choice's ratio from its gains."""
        b = dict(model.budget)
        budget, float_ppl = b["budget"], b["float_ppl"]
        if self.start is None:
            self.check_start(base, budget)
        now = self.cores(model)
        log(f"  cores on {now.describe()}")
        if now.fits:
            return self._record(model, b, now, 0)

        first = now
        kept = list(chosen)
        saved = {c.name: now.node_cores.get(c.name, 0) - self.start.node_cores.get(c.name, 0) for c in kept if c.kind == "weight"}
        drops = sorted((c for c in kept if c.kind == "weight" and saved[c.name] > 0),
                       key=lambda c: (c.log_gain / saved[c.name], c.name))
        dropped = []
        while not now.fits:
            if not drops:  # cannot be: every raised weight dropped is the start's cores, which fit
                raise TargetTooSmall(f"--target {self.target}: {now.cores_available:,} cores; with every raised weight "
                                     f"dropped the model still needs {now.cores_needed:,} (--budget {budget:g})")
            over = max(1, now.cores_needed - now.cores_available)  # 1: the cores would fit, the chips' packing not
            while drops and over > 0:
                c = drops.pop(0)
                kept.remove(c)
                dropped.append(c)
                over -= saved[c.name]
            now = self.cores(assemble(base, alt, kept))
        names = ", ".join(c.name for c in dropped[:6]) + (", ..." if len(dropped) > 6 else "")
        log(f"  {len(dropped)} raised weights dropped to fit ({names}): {now.describe()}")

        extra = [c for c in rest if c.kind == "act" and c.log_gain > 0]  # free in cores
        found = {}

        def measure(k):
            if k not in found:
                ppl, sops, spikes = integer_measure(assemble(base, alt, kept + extra[:k]), rows)
                found[k] = (ppl / float_ppl, sops, spikes)
                log(f"  fit check: {len(kept) + k} raised ({k} inputs added), measured {found[k][0]:.3f} x float "
                    f"({cost(sops, spikes):,.0f} {cost.unit} per token)")
            return found[k][0]

        k = 0
        if measure(0) > budget:
            lo, k = 0, len(extra)
            if not extra or measure(k) > budget:
                best = found[k][0]
                raise TargetTooSmall(
                    f"--target {self.target}: {first.cores_available:,} cores; the cheapest allocation within --budget "
                    f"{budget:g} needs {first.cores_needed:,}, and the best found that fits ({len(dropped)} raised weights "
                    f"dropped, {now.cores_needed:,} cores) reaches {best:.3f} x float")
            _, k, _ = narrow(lo, k, lambda lo, hi, _: (lo + hi) // 2, lambda mid: measure(mid) <= budget)  # the shortest prefix of `extra` within the budget
        ratio, sops, spikes = found[k]
        final = kept + extra[:k]
        fitted = assemble(base, alt, final)
        b.update(measured_ratio=ratio, energy=cost(sops, spikes), checks=b["checks"] + len(found),
                 predicted_ratio=predicted.at_gain(sum(max(c.log_gain, 0.0) for c in final)))
        log(f"  fitted: {fitted.quant.precision()}; calibration perplexity {ratio:.3f} x float (budget {budget:g}), "
            f"{b['energy']:,.0f} {cost.unit} per token")
        return self._record(fitted, b, now, len(dropped), first.cores_needed)

    def _record(self, model, b: dict, fit, dropped: int, chosen_cores: int = 0):
        line = fit.describe(named=False)  # the target is the record's own field
        if dropped:
            line += f"; {dropped} raised weights dropped to fit (the choice needed {chosen_cores:,})"
        return model.with_(budget={**b, "fit": line, "cores_needed": fit.cores_needed,
                                   "cores_available": fit.cores_available})
