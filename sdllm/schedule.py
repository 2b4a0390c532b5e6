"""The timestep schedule (DESIGN §3), typed: what the compiler fixes and the runtime runs.

Phases count the timesteps of one token position, 0 .. period − 1. A value computed in step t is
received in step t + 1. A layer's unit receives its residual at phase `resid_in` and emits the
spike train of stage k from phase `emit[k]` on; the stage's cores receive it in their `Window`
(first .. last, in its input's code) and send their sums at `last` (a stage with reduce cores:
one step later), which reach the unit at emit[k + 1]. The host sends a token's embedding to
arrive at phase 0, the last unit's ratio at `ratio_arrives`, the logits at the last phase.
Written into network.json as plain JSON (`to_json`) and read back, validated, by
`sdllm.formats.build`.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Window:
    """The phases a stage's cores receive its spike train in, and the train's code."""

    first: int
    last: int
    code: str

    @property
    def steps(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class LayerPhases:
    resid_in: int  # the residual arrives at the layer's unit
    emit: tuple  # phase at which the unit starts each stage's train; the last: the residual goes on


@dataclass(frozen=True)
class HostPhases:
    embed_arrives: int
    ratio_arrives: int
    logits_arrive: int


@dataclass(frozen=True)
class Schedule:
    period: int  # timesteps per token position
    layers: tuple  # LayerPhases per layer
    stages: dict  # stage node name ('L3.o', 'head') -> Window
    reduced: tuple  # the stages whose sums pass through reduce cores (one more step each)
    host: HostPhases

    @property
    def timesteps_per_spike_train(self) -> int:
        return max(w.steps for w in self.stages.values())

    def to_json(self) -> dict:
        return {"period": self.period, "timesteps_per_spike_train": self.timesteps_per_spike_train,
                "layers": [{"resid_in": lp.resid_in, "emit": list(lp.emit)} for lp in self.layers],
                "stages": {name: asdict(w) for name, w in self.stages.items()},
                "reduced": list(self.reduced), "host": asdict(self.host)}
