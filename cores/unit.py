"""Neuron-unit core: one decoder layer's programmable neurons (Loihi 2's microcoded neurons or
an embedded core): the residual stream, norms, RoPE, softmax, SiLU, and the encoders that send
every integer activation as its point's spike train. It spans as many physical cores as its axons
(the residual and every stage's sums) and neurons need, placed together on one chip.

Dynamics, within a token's period (the schedule's phases e_0 .. e_6 of its layer):

    e_0:       h ← the residual received (graded pieces joined, `units.received`);
               q = RMSNorm-quantise(h), the first stage's input   (γ-quantile per token)
    e_k, k≥1:  the accumulators of stage k−1 arrive; its program (`stages.LAYER[k−1].program`,
               `sdllm.models.integer.units`) returns the next points: spikes to start sending, or
               keys/values written (graded) into the KV cores' synapses, or at e_6 h ← h + down
    then:      h handed on (`units.carried`: saturated, in pieces) — or, in the last layer, the LM
               head's spikes and the host's ratio.

An encoder sends q as its code's train from the step after it is produced: ternary |q| spikes of
sign(q); bit planes the bits of |q|, most significant first, with sign(q). Units have no synapses
(no SOPs). What it sends is bounded (`graded_bounds`): a stage input's Q (±1 spikes, or a graded code's
payload), kv-bit writes, the residual's pieces, the ratio (`fixedpoint.ratio_bound`).
"""

import numpy as np

from sdllm import codes, stages
from sdllm.cores.core import Core
from sdllm.cores.stepping import CoreBehaviour
from sdllm.errors import SdllmError
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.units import DecoderLayerUnit, carried, hand_off, head_in, piece_bound, received
from sdllm.stages import CoreType, NodeKind


def span(n_axons: int, n_neurons: int, lim) -> int:
    """Physical cores a unit of n_axons inputs and n_neurons outputs spans."""
    return max(1, -(-n_axons // lim.max_input_axons), -(-n_neurons // lim.max_neurons))


def tile(node, lim, model, first_id: int):
    """(the unit's one logical core, its span: the lower bound, no synapses)."""
    k = span(node.inputs.total, node.outputs.total, lim)
    core = Core(first_id, node.name, CoreType.NEURON_UNIT, node.name, node.layer, np.arange(node.inputs.total),
                np.arange(node.outputs.total), params=dict(node.attrs["params"]), span=k,
                payload_bound=max(graded_bounds(node, model).values()))
    return [core], k, None


def graded_bounds(node, model) -> dict:
    """Output segment -> the largest |value| a neuron unit or the host sends on it, proved: the
    residual hand-off saturates at resid_max and travels in pieces (`units.carried`), the head's
    ratio is `fixedpoint.ratio_bound`, KV writes are kv-bit integers, spikes are ±1; the host's
    embedding pieces from its table."""
    p = node.attrs["params"]
    if node.kind is NodeKind.HOST:  # the carry is monotonic in |value|: the largest entry decides
        return {"embed": piece_bound(int(hand_off(np.abs(p["embed"]).max(initial=0), p)), p)}
    out = {}
    for seg in node.outputs.sizes:
        if seg == "resid_out":
            out[seg] = piece_bound(int(p["resid_max"]), p)
        elif seg == "ratio":
            out[seg] = fx.ratio_bound(model.config.dim, int(p["eps_fx"]))
        elif seg.endswith("_write"):
            out[seg] = fx.qmax(model.quant.kv_bits)
        else:  # a stage's input: ±1 spikes, or its integers in a graded code
            out[seg] = model.quant.at(stages.STAGES[seg].input, None if seg == stages.HEAD.name else node.layer).q_max
    return out


class NeuronUnitCore(CoreBehaviour):
    """One decoder layer's programmable neurons: the between-stage integer programs
    (`sdllm.models.integer.units`), run as the schedule's phases come, plus the encoders that send each
    integer activation as a train in the code the compiler chose for its stage."""

    def __init__(self, core, build, timeline):
        super().__init__(core, build, timeline)
        self.unit = DecoderLayerUnit(core.params, build.config.max_seq_len)
        self.params = core.params
        self.ins = build.segments(core.node, "inputs")
        self.outs = build.segments(core.node, "outputs")
        self.emit = build.schedule.layers[core.layer].emit
        self.payload_max = build.hw.core.payload_max
        self.quant = build.quant
        self.train = None  # the spike train being sent: (segment, steps still to send)
        self.windows = build.schedule.stages
        # to its hand-off; the last layer's unit until the head's train is sent (`schedule.widest_span`)
        tail = 1 if "resid_out" in self.outs else self.windows[stages.HEAD.node(None)].steps
        self.span = (self.emit[0], self.emit[-1] + tail)

    def phases(self) -> set:
        """From the residual's arrival to its hand-off (the last layer's: to the end of the head's train)."""
        return set(range(*self.span))

    def _start(self, stage, q):
        node = stage.node(self.core.layer)
        code = codes.CODES[self.windows[node].code]
        self.train = (stage.name, iter(code.encode(np.asarray(q, np.int64).reshape(-1), self.quant.of_stage(node).bits)))

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

    def step(self, token, phase, x):
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
            out = u.run(stage, acc, token, int(self.seq_first[token]))
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
