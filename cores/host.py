"""The host: the off-chip boundary — embedding lookup in, logits out, the choice of the next
token. It is simulated beside the chips (in the first chip's Lava Process when grouped by chip).

Dynamics, for each position p entering at step s_p (`sdllm.schedule.Timeline`): in step s_p − 1
it sends the token's embedding row as graded spikes (`units.carried`: saturated, in pieces); at
s_p + ratio_arrives it keeps the last unit's ratio; at s_p + period − 1 (the logits' arrival) it
turns the LM head's sums into logits (`units.logits_out`) and, after the prompt, picks the next
token with the sampler (greedy by default, `sdllm.runtime.sampling`), whose embedding it sends in
that same step. With the prompt pipelined several positions are in flight: the host keeps each
one's ratio. In a batch each sequence's tokens are chosen from its own positions' logits, the
sampler told the position within the sequence (so each sequence gets the tokens it would alone).
A token fed from outside (`feed`, the Lava Process's token_in) replaces the next one.
"""

import numpy as np

from sdllm.cores.core import Core
from sdllm.cores.stepping import CoreBehaviour
from sdllm.cores.unit import graded_bounds
from sdllm.errors import SdllmError
from sdllm.models.integer.units import carried, logits_out
from sdllm.stages import CoreType


def tile(node, model, first_id: int):
    """(the host's logical core, off-chip; no cores of a chip)."""
    core = Core(first_id, node.name, CoreType.HOST, node.name, node.layer, np.arange(node.inputs.total),
                np.arange(node.outputs.total), params=dict(node.attrs["params"]), span=0,
                payload_bound=max(graded_bounds(node, model).values()))
    return [core], 0, None


class HostCore(CoreBehaviour):
    def __init__(self, core, build, timeline, prompt, sampler):
        """prompt: the known tokens (`Timeline.known`), in position order: a batch's prompts one after another."""
        n_positions = timeline.positions
        super().__init__(core, build, timeline)
        self.timeline = timeline
        self.params = core.params
        self.vocab = len(core.params["embed"])
        h = build.schedule.host
        self.ratio_at, self.logits_at = h.ratio_arrives, h.logits_arrive
        starts = [int(s) for s in timeline.starts]
        self.sends = {s - 1: p for p, s in enumerate(starts) if p}  # step -> the position whose embedding goes out
        self.ratios = {s + self.ratio_at: p for p, s in enumerate(starts)}
        self.outs = {s + self.logits_at: p for p, s in enumerate(starts)}
        self.ins = build.segments(core.node, "inputs")
        self.tokens = np.zeros(n_positions + 1, np.int64)  # at each position; the last: the one chosen after it
        self.tokens[np.flatnonzero(timeline.known)] = prompt
        self.chosen = np.full(n_positions, -1, np.int64)  # the token each position's logits chose (-1: none)
        self.logits = np.zeros((n_positions, build.config.vocab_size), np.int64)
        self.ratio = np.zeros(n_positions, np.int64)
        self.sampler = sampler

    def embedding(self, token: int):
        """A token's embedding as graded spikes carry it to the first layer."""
        return carried(self.params["embed"][token], self.params)

    def first_output(self):
        """What the host sends in step 0: the first prompt token's embedding."""
        return self.embedding(self.tokens[0])

    def steps(self) -> list:
        """The steps it acts in (every position's events)."""
        return sorted({*self.sends, *self.ratios, *self.outs})

    def feed(self, position: int, token: int):
        """The token at `position` comes from outside: its embedding, to send instead."""
        if not 0 <= token < self.vocab:
            raise SdllmError(f"token_in: position {position}: a token id in 0..{self.vocab - 1}, got {token}")
        if position >= len(self.logits):
            raise SdllmError(f"token_in: position {position} is beyond the {len(self.logits)} positions this network holds")
        self.tokens[position] = token
        return self.embedding(token)

    def done(self, t: int) -> int | None:
        """The position whose logits arrive in step t, if any."""
        return self.outs.get(t)

    def step(self, t, x):
        """Step t: whatever events of whichever positions fall in it."""
        if t in self.ratios:
            self.ratio[self.ratios[t]] = int(x[slice(*self.ins["ratio"])][0])
        if t in self.outs:
            p = self.outs[t]
            self.logits[p] = logits_out(x[slice(*self.ins["logits"])], self.ratio[p], self.params)
            tl = self.timeline
            if tl.samples(p):
                self.chosen[p] = token = self.sampler(self.logits[p], p - int(tl.first[p]))
                if p + 1 == tl.positions or tl.first[p + 1] == tl.first[p]:
                    self.tokens[p + 1] = token
        if t in self.sends:
            return self.embedding(self.tokens[self.sends[t]])
        return self.zeros
