"""The host: the off-chip boundary — embedding lookup in, logits out, the choice of the next
token. It is simulated beside the chips (in the first chip's Lava Process when grouped by chip).

Dynamics, within a token's period: at the last phase of the previous position it sends the
token's embedding row as graded spikes (`units.carried`: saturated, in pieces) to arrive at
phase 0; at `ratio_arrives` it keeps the last unit's ratio; at `logits_arrive` (the last phase)
it turns the LM head's sums into logits (`units.logits_out`) and picks the next token — the
prompt's, or the sampler's (greedy by default, `sdllm.runtime.sampling`) — whose embedding it
sends. A token fed from outside (`feed`, the Lava Process's token_in) replaces the next one.
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
    def __init__(self, core, build, n_positions, prompt, sampler):
        super().__init__(core, build, n_positions)
        self.params = core.params
        self.embed = carried(core.params["embed"], core.params)  # as graded spikes carry it to the first layer
        h = build.schedule.host
        self.ratio_at, self.logits_at = h.ratio_arrives, h.logits_arrive
        self.ins = build.segments(core.node, "inputs")
        self.tokens = np.zeros(n_positions + 1, np.int64)
        self.tokens[: len(prompt)] = prompt
        self.n_prompt = len(prompt)
        self.logits = np.zeros((n_positions, build.config.vocab_size), np.int64)
        self.ratio = 0
        self.sampler = sampler

    def first_output(self):
        """What the host sends in step 0: the first prompt token's embedding."""
        return self.embed[self.tokens[0]]

    def phases(self) -> set:
        return {self.ratio_at, self.logits_at}

    def feed(self, position: int, token: int):
        """The token at `position` comes from outside: its embedding, to send instead."""
        if not 0 <= token < len(self.embed):
            raise SdllmError(f"token_in: position {position}: a token id in 0..{len(self.embed) - 1}, got {token}")
        if position >= len(self.logits):
            raise SdllmError(f"token_in: position {position} is beyond the {len(self.logits)} positions this network holds")
        self.tokens[position] = token
        return self.embed[token]

    def step(self, t, x):
        token, phase = self.clock(t)
        if phase == self.ratio_at:
            self.ratio = int(x[slice(*self.ins["ratio"])][0])
        if phase == self.logits_at:
            self.logits[token] = logits_out(x[slice(*self.ins["logits"])], self.ratio, self.params)
            if token + 1 >= self.n_prompt:
                self.tokens[token + 1] = self.sampler(self.logits[token], token)
            if token + 1 < len(self.logits):
                return self.embed[self.tokens[token + 1]]
        return self.zeros
