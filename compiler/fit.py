"""How many cores a model needs on a target, without a full compile: the compiler's own passes
lower and tile (every stage tiled as a compile tiles it: synapse blocks in the cheaper encoding
for each stage's weight bits, reduce cores, KV head groups, neuron units' spans), and the chips
filled as placement fills them (`place.pack`). No routing, rates, code choice, placement search,
schedule or emit: SmolLM2-135M's shape takes seconds (its weights tiled one stage at a time).

The count is the compile's: a compile of the same model for the same target reports
`cores_used` = `Fit.cores_needed`, and places it exactly when `Fit.fits` (placement fills
contiguous chips; the fewest it can use is `place.chips_needed`). A budgeted conversion checks
its choice with it (`sdllm.api.convert(budget=..., target=...)`).
"""

from dataclasses import dataclass

from sdllm.compiler import lower, place, tile
from sdllm.compiler.ir import Network
from sdllm.formats import hw as hwformat
from sdllm.formats.hw import HwConfig
from sdllm.formats.model import ModelFile


@dataclass(frozen=True)
class Fit:
    """A model's cores on a target: needed (physical cores, a unit's span counted whole) against available."""

    target: str
    cores_needed: int
    chips_needed: int  # chips filled in order (a unit spanning several cores never across two)
    cores_per_chip: int
    chips: int
    node_cores: dict  # operator-graph node -> the cores its tiles need

    @property
    def cores_available(self) -> int:
        return self.cores_per_chip * self.chips

    @property
    def fits(self) -> bool:
        return self.chips_needed <= self.chips

    def describe(self, named: bool = True) -> str:
        """e.g. 'loihi2: 110 of 128 cores (1 chip of 128)' (named: with the target's name)."""
        return (f"{self.target + ': ' if named else ''}{self.cores_needed:,} of {self.cores_available:,} cores "
                f"({self.chips} chip{'s' if self.chips != 1 else ''} of {self.cores_per_chip})"
                + ("" if self.fits or self.cores_needed > self.cores_available
                   else f", filling {self.chips_needed} chips (a unit's cores stay on one chip)"))


def cores_needed(model: ModelFile, target: str | HwConfig) -> Fit:
    """The cores `model` needs on `target` (a hw config name, a YAML path or a loaded config)."""
    hw = hwformat.load(target) if isinstance(target, str) else target
    net = tile.tile(lower.lower(Network(model=model, hw=hw)))
    node_cores = {}
    for c in net.cores:
        if c.on_chip:
            node_cores[c.node] = node_cores.get(c.node, 0) + c.span
    return Fit(hw.name, sum(node_cores.values()), place.chips_needed(net.cores, hw), hw.cores_per_chip, hw.chips, node_cores)
