"""The timestep schedule (docs/DESIGN.md §3), typed: what the compiler fixes and the runtime runs.

Phases count the timesteps of one token position, 0 .. period − 1. A value computed in step t is
received in step t + 1. A layer's unit receives its residual at phase `resid_in` and emits the
spike train of stage k from phase `emit[k]` on; the stage's cores receive it in their `Window`
(first .. last, in its input's code) and send their sums at `last` (a stage with reduce cores:
one step later), which reach the unit at emit[k + 1]. The host sends a token's embedding to
arrive at phase 0, the last unit's ratio at `ratio_arrives`, the logits at the last phase.

Layer pipelining. A layer's cores are busy in `interval` consecutive phases at most (the longest
layer's span: from its residual's arrival to its hand-off, the last layer's including the LM
head's train). Positions whose tokens are known — a prompt, a teacher-forced window — therefore
enter every `interval` steps: while layer i works on position t, layer i − 1 works on t + 1, and
every layer's KV cores hold a position's keys and values before the next position's queries
reach them. A generated token enters a period after the one before it (it needs its logits).
`Timeline` gives each position's first step. Written into network.json as plain JSON (`to_json`)
and read back, validated, by `sdllm.formats.build`.
"""

from dataclasses import asdict, dataclass

import numpy as np


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


def widest_span(layers: tuple, head: Window) -> int:
    """The most consecutive phases of a position any core acts in: a unit's, from its residual's
    arrival to its hand-off — the last one's until the LM head's train ends (every other core acts
    within its layer's unit's span, or within the head's window). The shortest safe interval."""
    spans = [lp.emit[-1] - lp.emit[0] + 1 for lp in layers[:-1]]
    return max(spans + [layers[-1].emit[-1] - layers[-1].emit[0] + head.steps])


@dataclass(frozen=True)
class Schedule:
    period: int  # timesteps per token position
    layers: tuple  # LayerPhases per layer
    stages: dict  # stage node name ('L3.o', 'head') -> Window
    reduced: tuple  # the stages whose sums pass through reduce cores (one more step each)
    host: HostPhases
    interval: int  # steps between positions whose tokens are known (the longest layer's span)

    @property
    def timesteps_per_spike_train(self) -> int:
        return max(w.steps for w in self.stages.values())

    def to_json(self) -> dict:
        return {"period": self.period, "interval": self.interval, "timesteps_per_spike_train": self.timesteps_per_spike_train,
                "layers": [{"resid_in": lp.resid_in, "emit": list(lp.emit)} for lp in self.layers],
                "stages": {name: asdict(w) for name, w in self.stages.items()},
                "reduced": list(self.reduced), "host": asdict(self.host)}


@dataclass(frozen=True)
class Timeline:
    """When each position of a run enters the network. A run holds one sequence, or several
    (a batch) side by side: sequence s owns the positions first_s .. first_s + n_s + n_new − 2 of the
    KV caches, where its prompt's tokens are known and the rest are chosen from the logits of the
    position before. Known tokens — every prompt, one after another — enter every `interval` steps
    (every `period` unpipelined); then the sequences' generated tokens take turns, each entering an
    interval after the one before it and no sooner than a period after its own sequence's last
    (it needs those logits). Every two positions enter at least an interval apart."""

    starts: np.ndarray  # (positions,) the step in which each position's embedding arrives
    period: int
    first: np.ndarray  # (positions,) the first position of its sequence (its position in the sequence: p − first[p])
    known: np.ndarray  # (positions,) bool: its token is given (a prompt's), not chosen from the position before

    @classmethod
    def of(cls, schedule: Schedule, n_prompt: int, n_positions: int, pipelined: bool = True) -> "Timeline":
        """One sequence: an n_prompt-token prompt, n_positions positions in all."""
        return cls._laid_out(schedule, [n_prompt], [n_positions], pipelined)

    @classmethod
    def batch(cls, schedule: Schedule, prompt_lengths, n_new: int, pipelined: bool = True) -> "Timeline":
        """Several sequences, each its prompt and n_new tokens to generate (its last one is chosen
        from its last position's logits, so n_prompt + n_new − 1 positions each)."""
        return cls._laid_out(schedule, list(prompt_lengths), [n + n_new - 1 for n in prompt_lengths], pipelined)

    @classmethod
    def _laid_out(cls, schedule: Schedule, n_prompts: list, lengths: list, pipelined: bool) -> "Timeline":
        lengths = np.asarray(lengths, np.int64)
        firsts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        first = np.repeat(firsts, lengths)
        offset = np.arange(len(first)) - first
        known = offset < np.repeat(np.asarray(n_prompts, np.int64), lengths)
        gap = schedule.interval if pipelined else schedule.period
        starts = np.zeros(len(first), np.int64)
        last = -gap
        for p in np.flatnonzero(known):  # the prompts, one after another
            starts[p] = last = last + gap
        # then the generated tokens, the earliest ready first (a sequence's next is ready a period
        # after its last; ties: the earlier sequence)
        nxt = {int(f): int(f + n) for f, n, m in zip(firsts, n_prompts, lengths) if n < m}
        while nxt:
            ready = {f: (int(starts[p - 1]) + schedule.period if p > f else 0) for f, p in nxt.items()}
            f = min(nxt, key=lambda f: (ready[f], f))
            p = nxt.pop(f)
            starts[p] = last = max(last + gap, ready[f])
            if p + 1 < f + lengths[np.searchsorted(firsts, f)]:
                nxt[f] = p + 1
        return cls(starts, schedule.period, first, known)

    @property
    def positions(self) -> int:
        return len(self.starts)

    @property
    def sequences(self) -> list:
        """(first, stop) position range of each sequence, in order."""
        firsts = np.unique(self.first)
        return [(int(a), int(b)) for a, b in zip(firsts, [*firsts[1:], self.positions])]

    def samples(self, position: int) -> bool:
        """Whether position's logits choose a token: its sequence's next one, or the one after its last."""
        nxt = position + 1
        return nxt >= self.positions or self.first[nxt] != self.first[position] or not self.known[nxt]

    def done(self, position: int) -> int:
        """Steps until position's logits are out (and its next token chosen)."""
        return int(self.starts[position]) + self.period

    @property
    def total(self) -> int:
        return int(self.starts.max(initial=-self.period)) + self.period

    def active(self, phases) -> tuple:
        """(steps, positions, phases) at which a core acting in `phases` of every position acts;
        a core's phases lie within one interval, so positions never overlap."""
        phases = np.asarray(sorted(phases), np.int64)
        steps = (self.starts[:, None] + phases[None, :]).reshape(-1)
        pos = np.repeat(np.arange(self.positions), len(phases))
        ph = np.tile(phases, self.positions)
        return steps, pos, ph
