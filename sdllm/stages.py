"""The stages of an SDLLM, declared once.

A decoder layer is one neuron unit — the layer's programmable neurons: residual stream, norms,
RoPE, softmax, SiLU, the spike encoders — and six spike-driven stages it drives in turn. Each
stage consumes the spike counts of one quantisation point and hands its accumulators to one of
the unit's integer programs (`sdllm.models.integer.units.DecoderLayerUnit`), which returns the next
points. After the last layer the LM head is one more static stage, whose sums the host turns
into logits. Conversion, calibration, evaluation, the compiler's lowering and schedule, and the
runtime's cores all iterate over this table; nothing else spells a stage's name.

To add a stage: a `Stage` here (where in `LAYER`, its kind, the point it consumes, its sizes,
the unit program that takes its sums and the points that program returns), that program in
`DecoderLayerUnit`, and — for a new kind — its core type's module in `sdllm.cores`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np


class NodeKind(str, Enum):
    """Operator-graph node kinds, as builds name them."""

    UNIT = "unit"
    STATIC = "synapse"  # static synapses: a weight matrix
    KV_QK = "kv_qk"  # dynamic synapses: the cached keys, read by query spikes
    KV_PV = "kv_pv"  # dynamic synapses: the cached values, read by probability spikes
    HOST = "host"


class CoreType(str, Enum):
    """Core types, as builds name them."""

    SYNAPSE = "synapse"
    REDUCE = "reduce"  # adds the partial sums of a static stage's fan-in tiles
    KV_QK = "kv_qk"
    KV_PV = "kv_pv"
    NEURON_UNIT = "neuron_unit"
    HOST = "host_io"


HOST_NODE = NodeKind.HOST.value  # the host's node name (a network has one host)


def unit_node(layer: int) -> str:
    """The node name of a layer's neuron unit: 'L{layer}.unit'."""
    return f"L{layer}.{NodeKind.UNIT.value}"


# what tiling makes of each node kind (a static stage also gets reduce cores when its fan-in is split)
CORE_TYPE = {NodeKind.UNIT: CoreType.NEURON_UNIT, NodeKind.STATIC: CoreType.SYNAPSE, NodeKind.KV_QK: CoreType.KV_QK,
             NodeKind.KV_PV: CoreType.KV_PV, NodeKind.HOST: CoreType.HOST}
KV_KINDS = (NodeKind.KV_QK, NodeKind.KV_PV)
SYNAPTIC_CORES = (CoreType.SYNAPSE, CoreType.KV_QK, CoreType.KV_PV)  # cores whose neurons integrate spike windows


class Scale(Enum):
    """How a quantisation point's integers get their scale."""

    TOKEN_QUANTILE = "γ-quantile of |x| per token"
    HEAD_QUANTILE = "γ-quantile of |x| per (token, head)"
    HEAD_MAX = "max of |x| per (token, kv head)"
    CHANNEL_STATIC = "static per channel (calibrated range)"
    HEAD_MAX_UNSIGNED = "max per (token, head), unsigned"


@dataclass(frozen=True)
class Point:
    """A quantisation point: an activation an SDLLM carries as integers (spike counts, or values
    written into dynamic synapses). Its name is the float model's tap name, 'L{i}.{name}'."""

    name: str
    what: str
    scale: Scale
    bits: str  # the QuantSpec field that sets its bits (unless overridden per point or per layer)
    width: Callable  # config -> values per row (the γ-quantile's order statistic is taken over these)

    def tap(self, layer: int | None) -> str:
        """Its name in a layer (the float model's tap, model.pt's γ): 'L{layer}.{name}', or the head's own."""
        return self.name if layer is None else f"L{layer}.{self.name}"

    @property
    def gamma(self) -> bool:
        """Calibrated γ (per point and layer)."""
        return self.scale in (Scale.TOKEN_QUANTILE, Scale.HEAD_QUANTILE)

    @property
    def signed(self) -> bool:
        return self.scale is not Scale.HEAD_MAX_UNSIGNED

    @property
    def spiked(self) -> bool:
        """Sent as a spike train (else written into dynamic synapses as graded values)."""
        return self.scale not in (Scale.HEAD_MAX, Scale.CHANNEL_STATIC)


ATTN_IN = Point("qkv", "RMSNorm'd residual, input of q/k/v", Scale.TOKEN_QUANTILE, "act_bits", lambda c: c.dim)
QUERY = Point("q", "query after RoPE", Scale.HEAD_QUANTILE, "attn_bits", lambda c: c.head_dim)
KEY = Point("k", "key after RoPE, written into synapses", Scale.HEAD_MAX, "kv_bits", lambda c: c.head_dim)
VALUE = Point("v", "value, written into synapses", Scale.CHANNEL_STATIC, "kv_bits", lambda c: c.head_dim)
PROBS = Point("p", "softmax probabilities", Scale.HEAD_MAX_UNSIGNED, "attn_bits", lambda c: c.max_seq_len)
ATTN_OUT = Point("o", "attention output, input of o", Scale.TOKEN_QUANTILE, "act_bits", lambda c: c.n_heads * c.head_dim)
MLP_IN = Point("gate_up", "RMSNorm'd residual, input of gate/up", Scale.TOKEN_QUANTILE, "act_bits", lambda c: c.dim)
MLP_ACT = Point("down", "SiLU(gate)·up (online Hadamard'd), input of down", Scale.TOKEN_QUANTILE, "act_bits",
                lambda c: c.ffn_dim)
HEAD_IN = Point("head", "final RMSNorm'd residual, input of the LM head", Scale.TOKEN_QUANTILE, "act_bits", lambda c: c.dim)
LAYER_POINTS = (ATTN_IN, QUERY, KEY, VALUE, PROBS, ATTN_OUT, MLP_IN, MLP_ACT)
# the points that read the (rotated) residual stream through an RMSNorm: the ones a high-precision
# channel group of the residual rotation widens (`sdllm.formats.model.QuantSpec.wide_channels`)
RESIDUAL_READERS = (ATTN_IN, MLP_IN, HEAD_IN)
POINTS = {p.name: p for p in (*LAYER_POINTS, HEAD_IN)}


@dataclass(frozen=True)
class Stage:
    """A spike-driven stage: spikes of `input` against synapses -> accumulators -> `program`."""

    name: str
    kind: NodeKind
    input: Point
    n_in: Callable  # config -> spike axons
    n_out: Callable  # config -> accumulators
    program: str  # the DecoderLayerUnit method that takes its accumulators (the host's, for the head)
    produces: tuple = ()  # the points that program returns, in order; () for the residual stream
    cache: Point | None = None  # KV stages: the point the unit writes into their synapses
    layered: bool = True  # one per layer (the head: one, after the last layer)

    @property
    def static(self) -> bool:
        return self.kind is NodeKind.STATIC

    def node(self, layer: int | None) -> str:
        """Its name in model.pt, calibration taps, builds: 'L{layer}.{name}', or for a stage of no
        layer (the head) its own name, whatever layer is asked (the last layer's unit feeds it)."""
        return self.name if layer is None or not self.layered else f"L{layer}.{self.name}"

    def fanout(self, cfg, weight_fanout=None, pos=None):
        """The SOP rule: synapses one spike on an input axon reads. Static stages: the axon's
        non-zero weights; Q·Kᵀ: one per cached key (pos + 1); P·V: one per value channel."""
        if self.kind is NodeKind.KV_QK:
            return pos + 1
        if self.kind is NodeKind.KV_PV:
            return cfg.head_dim
        return weight_fanout


def reduce_sops(partials) -> int:
    """The reduce cores' SOP rule: one per non-zero partial sum received (a synapse of weight 1)."""
    return int(np.count_nonzero(partials))


# The unit's first program, on the residual it receives: RMSNorm fused with the first quantisation.
LAYER_INPUT = ("attention_input", (ATTN_IN,))
LAYER = (
    Stage("qkv", NodeKind.STATIC, ATTN_IN, lambda c: c.dim, lambda c: (c.n_heads + 2 * c.n_kv_heads) * c.head_dim,
          "rope_query_key_value", (QUERY, KEY, VALUE)),
    Stage("qk", NodeKind.KV_QK, QUERY, lambda c: c.n_heads * c.head_dim, lambda c: c.n_heads * c.max_seq_len,
          "softmax", (PROBS,), cache=KEY),
    Stage("pv", NodeKind.KV_PV, PROBS, lambda c: c.n_heads * c.max_seq_len, lambda c: c.n_heads * c.head_dim,
          "attention_output", (ATTN_OUT,), cache=VALUE),
    Stage("o", NodeKind.STATIC, ATTN_OUT, lambda c: c.n_heads * c.head_dim, lambda c: c.dim,
          "add_attention", (MLP_IN,)),
    Stage("gate_up", NodeKind.STATIC, MLP_IN, lambda c: c.dim, lambda c: 2 * c.ffn_dim, "swiglu", (MLP_ACT,)),
    Stage("down", NodeKind.STATIC, MLP_ACT, lambda c: c.ffn_dim, lambda c: c.dim, "add_mlp"),
)
HEAD = Stage("head", NodeKind.STATIC, HEAD_IN, lambda c: c.dim, lambda c: c.vocab_size, "logits", layered=False)
STAGES = {s.name: s for s in (*LAYER, HEAD)}
LAYER_STATIC = tuple(s for s in LAYER if s.static)
ENTRY_STAGE = LAYER[0]  # where a layer's residual enters: its bias (Qwen2's q/k/v biases) is added after it


def consumer(point: Point) -> Stage:
    """The stage whose spikes are this point's integers."""
    return next(s for s in STAGES.values() if s.input is point)


def cache_of(point: Point) -> Stage | None:
    """The KV stage whose synapses this point is written into, if any."""
    return next((s for s in LAYER if s.cache is point), None)


def producer_index(point: Point) -> int:
    """Index in LAYER of the stage whose program produces this point."""
    return next(k for k, s in enumerate(LAYER) if point in s.produces)


def stage_of(node: str) -> Stage:
    """The stage of a node name ('L3.o', 'head')."""
    return STAGES[node.rsplit(".", 1)[-1]]


def layer_of(name: str) -> int | None:
    """The layer of a node or tap name ('L3.o' -> 3), None for the head's ('head')."""
    return int(name.split(".", 1)[0][1:]) if "." in name else None


def _parse(name: str, table: dict, head, of_layer) -> tuple | None:
    """(entry, layer or None) of 'L{i}.{key}' (key in table, entry in of_layer) or of the head's name."""
    layer, _, key = name.rpartition(".")
    if not layer:
        return (head, None) if name == head.name else None
    if not (layer[:1] == "L" and layer[1:].isdecimal() and layer[1:] == str(int(layer[1:]))):
        return None
    entry = table.get(key)
    return (entry, int(layer[1:])) if entry in of_layer else None


def parse_tap(name: str) -> tuple | None:
    """(Point, layer or None) of a tap name ('L3.down', 'head'), or None if it names no point of a layer."""
    return _parse(name, POINTS, HEAD_IN, LAYER_POINTS)


def parse_node(name: str) -> tuple | None:
    """(Stage, layer or None) of a static stage's node name ('L3.gate_up', 'head'), or None."""
    return _parse(name, STAGES, HEAD, LAYER_STATIC)


def static_stages(cfg):
    """(node name, Stage, layer or None) of every static stage, in forward order (as model.pt lists weights)."""
    for i in range(cfg.n_layers):
        for s in LAYER_STATIC:
            yield s.node(i), s, i
    yield HEAD.node(None), HEAD, None


def static_shapes(cfg) -> dict:
    """node name -> (n_out, n_in) of every static stage, in forward order."""
    return {name: (s.n_out(cfg), s.n_in(cfg)) for name, s, _ in static_stages(cfg)}


def cache_width(cfg) -> int:
    """Values one token writes into a KV stage's synapses: every kv head's channels."""
    return cfg.n_kv_heads * cfg.head_dim


def unit_segments(cfg, last: bool, resid_pieces: int = 1):
    """(inputs, outputs) of a layer's neuron unit as [(segment, size)], in build order: the
    residual (each channel in resid_pieces graded spikes) and every stage's accumulators in; every
    stage's spikes, the KV writes and the residual (or, in the last layer, the head's spikes and
    the host's ratio) out."""
    inputs = [("resid_in", cfg.dim * resid_pieces)] + [(s.name, s.n_out(cfg)) for s in LAYER]
    first, rest = LAYER[0], LAYER[1:]
    writes = [(f"{s.cache.name}_write", cache_width(cfg)) for s in LAYER if s.cache]
    outputs = [(first.name, first.n_in(cfg))] + writes + [(s.name, s.n_in(cfg)) for s in rest]
    outputs += [(HEAD.name, HEAD.n_in(cfg)), ("ratio", 1)] if last else [("resid_out", cfg.dim * resid_pieces)]
    return inputs, outputs


def write_segment(stage: Stage) -> str:
    return f"{stage.cache.name}_write"
