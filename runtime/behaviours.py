"""What each core type does in one timestep, independent of Lava.

`step(t, x)` takes the step number and the vector that arrived on the core's axons this step
and returns the core's output vector (its node-space outputs, local order) computed this
step, which the destination cores receive in step t+1. Per-token SOP counters live inside.
A stage's spikes come in its input's code (`sdllm.codes`): the cores that integrate them
multiply their accumulators by the code's radix before each step's sum (2 for bit planes).
"""

import numpy as np

from sdllm import codes, stages
from sdllm.errors import SdllmError
from sdllm.models.integer.units import DecoderLayerUnit, carried, head_in, logits_out, received
from sdllm.runtime.sampling import GREEDY
from sdllm.stages import CoreType, NodeKind


class CoreBehaviour:
    def __init__(self, core, build, n_positions: int):
        self.core = core
        self.period = build.schedule["period"]
        self.sops = np.zeros(n_positions, np.int64)
        self.zeros = np.zeros(core.n_neurons, np.int64)

    def clock(self, t: int):
        return divmod(t, self.period)

    def phases(self) -> set:
        """The phases of a token in which the core reads its axons or sends anything; in every
        other phase its step is a no-op returning `zeros` (and need not run)."""
        return set(range(self.period))


def _check_ternary(core, x):
    if x.size and np.abs(x).max() > 1:
        raise SdllmError(f"core {core.name}: received a value of {int(np.abs(x).max())} on a spike axon (spikes are -1, 0, +1)")


class StageWindow:
    """The phases a stage's spikes arrive in and the radix its cores accumulate them with."""

    def __init__(self, core, build):
        window = build.schedule["stages"][core.node]
        self.first, self.last = window["first"], window["last"]
        self.radix = codes.CODES[window["code"]].radix

    def phases(self) -> set:
        return set(range(self.first, self.last + 1))


class SynapseCore(StageWindow, CoreBehaviour):
    """Static synapses: accumulate W·s over the stage's window, send the sums as graded spikes."""

    def __init__(self, core, build, n_positions):
        CoreBehaviour.__init__(self, core, build, n_positions)
        StageWindow.__init__(self, core, build)
        self.w = core.weights()
        self.fanout = np.count_nonzero(self.w, axis=0)  # SOPs count non-zero synapses in either encoding
        self.acc = np.zeros(core.n_neurons, np.int64)
        if int(np.abs(self.w).sum(1).max(initial=0)) < 1 << 24:  # one step's sums exact in float32: use BLAS
            self.w = self.w.astype(np.float32)

    def step(self, t, x):
        token, phase = self.clock(t)
        if self.first <= phase <= self.last:
            _check_ternary(self.core, x)
            if self.radix != 1:
                self.acc *= self.radix
            self.acc += (self.w @ x.astype(self.w.dtype)).astype(np.int64)
            self.sops[token] += int(np.abs(x) @ self.fanout)
            if phase == self.last:
                out, self.acc = self.acc, np.zeros_like(self.acc)
                return out
        return self.zeros


class ReduceCore(CoreBehaviour):
    """Adds the partial sums of a stage's fan-in tiles (axon a·m + j: part a of output j), the
    step after they send them, and sends the totals. One SOP per non-zero partial received."""

    def __init__(self, core, build, n_positions):
        super().__init__(core, build, n_positions)
        self.at = build.schedule["stages"][core.node]["last"] + 1
        self.parts = core.params["fan_in_parts"]

    def phases(self) -> set:
        return {self.at}

    def step(self, t, x):
        token, phase = self.clock(t)
        if phase != self.at:
            return self.zeros
        self.sops[token] += int(np.count_nonzero(x))
        return x.reshape(self.parts, -1).sum(0)


class KvCore(StageWindow, CoreBehaviour):
    """Dynamic synapses holding the KV cache of some query heads.

    kv_qk: spikes of q (heads x head_dim) against cached keys -> scores (heads x max_seq).
    kv_pv: spikes of p (heads x max_seq) against cached values -> outputs (heads x head_dim).
    The write axons carry the new token's keys/values (graded), stored at its position.
    """

    def __init__(self, core, build, n_positions):
        CoreBehaviour.__init__(self, core, build, n_positions)
        StageWindow.__init__(self, core, build)
        p = core.params
        self.h, self.hd, self.S, self.n_spike = p["n_heads"], p["head_dim"], p["max_seq_len"], p["n_spike_axons"]
        n_kv = (core.n_axons - self.n_spike) // self.hd
        self.cache = np.zeros((n_kv, self.S, self.hd), np.int64)
        self.kv_of_head = (p["head0"] + np.arange(self.h)) // p["group"] - p["kv_head0"]
        stage = stages.stage_of(core.node)
        # the unit sends the cache writes with the accumulators' program of the stage that produces them
        self.write_at = build.schedule["layers"][core.layer]["emit"][stages.producer_index(stage.cache) + 1] + 1
        self.qk = stage.kind is NodeKind.KV_QK
        self.acc = np.zeros(core.n_neurons, np.int64)

    def phases(self) -> set:
        return StageWindow.phases(self) | {self.write_at}

    def step(self, t, x):
        token, phase = self.clock(t)
        if phase == self.write_at:
            self.cache[:, token] = x[self.n_spike :].reshape(-1, self.hd)
        if self.first <= phase <= self.last:
            s = x[: self.n_spike]
            _check_ternary(self.core, s)
            mem = self.cache[self.kv_of_head]  # (heads, S, hd)
            if self.radix != 1:
                self.acc *= self.radix
            if self.qk:
                self.acc += np.einsum("hd,htd->ht", s.reshape(self.h, self.hd), mem).reshape(-1)
                self.sops[token] += int(np.abs(s).sum()) * (token + 1)
            else:
                self.acc += np.einsum("ht,htd->hd", s.reshape(self.h, self.S), mem).reshape(-1)
                self.sops[token] += int(np.abs(s).sum()) * self.hd
            if phase == self.last:
                out, self.acc = self.acc, np.zeros_like(self.acc)
                return out
        return self.zeros


class NeuronUnitCore(CoreBehaviour):
    """One decoder layer's programmable neurons: the between-stage integer programs
    (`sdllm.models.integer.units`), run as the schedule's phases come, plus the encoders that send each
    integer activation as its point's spike train (ternary: |q| spikes of sign(q); bit planes:
    the bits of |q|, most significant first, with sign(q))."""

    def __init__(self, core, build, n_positions):
        super().__init__(core, build, n_positions)
        self.unit = DecoderLayerUnit(core.params, build.config.max_seq_len)
        self.params = core.params
        self.ins = build.segments(core.node, "inputs")
        self.outs = build.segments(core.node, "outputs")
        self.emit = build.schedule["layers"][core.layer]["emit"]
        self.payload_max = build.hw.core.payload_max
        self.quant = build.quant
        self.train = None  # the spike train being sent: (segment, steps still to send)
        last = stages.HEAD if "resid_out" not in self.outs else stages.LAYER[-1]
        self.span = (self.emit[0], self.emit[-1] + build.quant.window(last.input) + 1)

    def phases(self) -> set:
        """From the residual's arrival to the end of its last spike train (the head's, in the last layer)."""
        return set(range(*self.span))

    def _start(self, stage, q):
        point = stage.input
        code = codes.CODES[self.quant.code_of(point)]
        self.train = (stage.name, iter(code.encode(np.asarray(q, np.int64).reshape(-1), self.quant.bits(point))))

    def _put(self, y, seg, value):
        value = np.asarray(value, np.int64).reshape(-1)
        if value.size and np.abs(value).max() > self.payload_max:
            raise SdllmError(f"core {self.core.name}: graded spike on {seg} needs more than the "
                             f"{self.payload_max.bit_length() + 1}-bit payload (value {int(np.abs(value).max())})")
        a, b = self.outs[seg]
        y[a:b] = value

    def _send(self, y, point, value):
        """A produced point: written into a KV stage's synapses (graded), or a spike train to its stage."""
        cache = stages.cache_of(point)
        if cache is not None:
            self._put(y, stages.write_segment(cache), value)
        else:
            self._start(stages.consumer(point), value)

    def step(self, t, x):
        token, phase = self.clock(t)
        y = np.zeros(self.core.n_neurons, np.int64)
        seg = lambda name: x[slice(*self.ins[name])]  # noqa: E731
        u, e = self.unit, self.emit
        if phase == e[0]:
            program, (point,) = stages.LAYER_INPUT
            self._send(y, point, getattr(u, program)(received(seg("resid_in"), self.params)))
        elif phase in e[1:]:
            stage = stages.LAYER[e.index(phase, 1) - 1]
            acc = seg(stage.name)
            if stage.kind is NodeKind.KV_QK:
                acc = acc.reshape(int(self.params["n_heads"]), -1)
            out = u.run(stage, acc, token)
            for point, value in zip(stage.produces, out if stage.produces else ()):
                self._send(y, point, value)
            if not stage.produces:
                if "resid_out" in self.outs:
                    self._put(y, "resid_out", carried(out, self.params))
                else:
                    q, ratio = head_in(out, self.params)
                    self._put(y, "ratio", [ratio])
                    self._start(stages.HEAD, q)
        if self.train is not None:
            seg, steps = self.train
            s = next(steps, None)
            if s is None:
                self.train = None
            else:
                a, b = self.outs[seg]
                y[a:b] = s
        return y


class HostCore(CoreBehaviour):
    """The host boundary: embedding lookup in, logits out, the choice of the next token (the
    sampler's: greedy by default). Prompt tokens are taken as given; a token fed from outside
    (`feed`) replaces the next embedding."""

    def __init__(self, core, build, n_positions, prompt, sampler=GREEDY):
        super().__init__(core, build, n_positions)
        self.params = core.params
        self.embed = carried(core.params["embed"], core.params)  # as graded spikes carry it to the first layer
        h = build.schedule["host"]
        self.ratio_at, self.logits_at = h["ratio_arrives"], h["logits_arrive"]
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


BEHAVIOURS = {CoreType.SYNAPSE: SynapseCore, CoreType.REDUCE: ReduceCore, CoreType.KV_QK: KvCore,
              CoreType.KV_PV: KvCore, CoreType.NEURON_UNIT: NeuronUnitCore}


def make_behaviour(core, build, n_positions: int, prompt, sampler=GREEDY):
    if core.type == CoreType.HOST:
        return HostCore(core, build, n_positions, prompt, sampler)
    return BEHAVIOURS[CoreType(core.type)](core, build, n_positions)
