"""Pass lower: the SDLLM -> operator graph (networkx) of neuron units, spike-driven stages and the
host, one unit and the stage table's stages per layer (`sdllm.stages`). Adds `graph`."""

import networkx as nx

from sdllm import stages
from sdllm.compiler.ir import Graph, Network, Node, Segments, Weights
from sdllm.models.integer.units import (
    RESID_MAX_KEY,
    carry_params,
    head_params,
    point_keys,
    qmax_key,
    scale_key,
    unit_params,
)
from sdllm.stages import NodeKind


class _Builder:
    def __init__(self):
        self.nodes, self.edges = {}, nx.MultiDiGraph()

    def add(self, node: Node) -> Node:
        self.nodes[node.name] = node
        self.edges.add_node(node.name, kind=node.kind.value)
        return node

    def connect(self, src: str, src_seg: str, dst: str, dst_seg: str) -> None:
        n_src = self.nodes[src].outputs.sizes[src_seg]
        n_dst = self.nodes[dst].inputs.sizes[dst_seg]
        if n_src != n_dst:
            raise ValueError(f"edge {src}.{src_seg} ({n_src}) -> {dst}.{dst_seg} ({n_dst}): sizes differ")
        self.edges.add_edge(src, dst, src_seg=src_seg, dst_seg=dst_seg, size=n_src)


def _static(g: _Builder, model, name: str, layer: int) -> Node:
    cfg = model.config
    stage = stages.stage_of(name)
    weight = Weights((stage.n_out(cfg), stage.n_in(cfg)), lambda: model.weight(name))
    return g.add(Node(name, NodeKind.STATIC, layer, Segments.of([("in", weight.shape[1])]),
                      Segments.of([("out", weight.shape[0])]), weight=weight, attrs={"weight_bits": model.quant.weights_at(stage, stages.layer_of(name))}))


def lower(net: Network) -> Network:
    model = net.model
    cfg = model.config
    g = _Builder()
    head = head_params(model)
    carry = carry_params(cfg.resid_bits, net.hw.core.graded_payload_bits)
    host_params = {"embed": model.embed_fx, scale_key(stages.HEAD): head[scale_key(stages.HEAD)],
                   qmax_key(stages.HEAD.input): head[qmax_key(stages.HEAD.input)], RESID_MAX_KEY: cfg.resid_max,
                   **carry}
    g.add(Node(stages.HOST_NODE, NodeKind.HOST, -1, Segments.of([("logits", cfg.vocab_size), ("ratio", 1)]),
               Segments.of([("embed", cfg.dim * carry["resid_pieces"])]), attrs={"params": host_params}))
    kv_attrs = {"n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
                "max_seq_len": cfg.max_seq_len, "weight_bits": model.quant.kv_bits}
    prev = (stages.HOST_NODE, "embed")
    for i in range(cfg.n_layers):
        last = i == cfg.n_layers - 1
        ins, outs = stages.unit_segments(cfg, last, carry["resid_pieces"])
        params = unit_params(model, i) | carry
        if last:
            for key in point_keys(stages.HEAD_IN, head):
                params[key] = head[key]
        unit = g.add(Node(stages.unit_node(i), NodeKind.UNIT, i, Segments.of(ins), Segments.of(outs), attrs={"params": params}))
        g.connect(*prev, unit.name, "resid_in")
        for s in stages.LAYER_STATIC:
            node = _static(g, model, s.node(i), i)
            g.connect(unit.name, s.name, node.name, "in")
            g.connect(node.name, "out", unit.name, s.name)
        kv = [s for s in stages.LAYER if s.kind in stages.KV_KINDS]
        for s in kv:
            g.add(Node(s.node(i), s.kind, i, Segments.of([("spikes", s.n_in(cfg)), ("write", stages.cache_width(cfg))]),
                       Segments.of([("out", s.n_out(cfg))]), attrs=dict(kv_attrs)))
        for s in kv:
            g.connect(unit.name, s.name, s.node(i), "spikes")
            g.connect(unit.name, stages.write_segment(s), s.node(i), "write")
            g.connect(s.node(i), "out", unit.name, s.name)
        prev = (unit.name, "resid_out")
    node = _static(g, model, stages.HEAD.name, cfg.n_layers)
    last_unit = stages.unit_node(cfg.n_layers - 1)
    g.connect(last_unit, stages.HEAD.name, node.name, "in")
    g.connect(node.name, "out", stages.HOST_NODE, "logits")
    g.connect(last_unit, "ratio", stages.HOST_NODE, "ratio")
    return net.add("lower", graph=Graph(g.nodes, g.edges))
