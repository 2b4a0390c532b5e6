"""What every core's step shares, independent of Lava.

`step(pos, phase, x)` takes the position the core works on, the phase of that position's period
and the vector that arrived on the core's axons in this step, and returns the core's outputs
computed in it (its node-space outputs, local order), which their destinations receive in the
next step (docs/DESIGN.md §3). A core acts only in some phases of a position (`phases`, all within one
`Schedule.interval`), and is stepped only then (`sdllm.schedule.Timeline.active`): positions
may overlap in the network (layer pipelining), never in one core. Synaptic operations are
counted per position inside the core.
"""

import numpy as np

from sdllm import codes
from sdllm.errors import SdllmError


class CoreBehaviour:
    def __init__(self, core, build, timeline):
        self.core = core
        self.period = build.schedule.period
        self.seq_first = timeline.first  # each position's sequence's first (`sdllm.schedule.Timeline`)
        self.sops = np.zeros(timeline.positions, np.int64)
        self.zeros = np.zeros(core.n_neurons, np.int64)

    def phases(self) -> set:
        """The phases of a position in which the core reads its axons or sends anything."""
        return set(range(self.period))


def check_events(core, x, limit: int) -> None:
    """What arrived on a stage's input axons in one step: ±1 spikes, or a graded code's values."""
    if x.size and np.abs(x).max() > limit:
        raise SdllmError(f"core {core.name}: received a value of {int(np.abs(x).max())} on an input axon "
                         f"(its code carries at most {limit})")


class StageWindow:
    """The phases a stage's train arrives in, the radix its cores accumulate it with
    (`codes.Code.radix`: 1 for counts, 2 for planes, most significant first) and the largest value
    one step carries (1 but for graded spikes)."""

    def __init__(self, core, build):
        window = build.schedule.stages[core.node]
        self.first, self.last = window.first, window.last
        code = codes.CODES[window.code]
        self.radix = code.radix
        self.event_max = code.event_max(build.quant.of_stage(core.node).bits)

    def phases(self) -> set:
        return set(range(self.first, self.last + 1))
