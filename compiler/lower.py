"""Pass 1: model.pt -> operator graph (networkx) of neuron units, spike-driven stages and the host."""

from sdllm.compiler.ir import Network, Node, Weights
from sdllm.models.sdllm import config_of, head_params, stage_shapes, stage_weight, unit_params

STATIC_STAGES = ("qkv", "o", "gate_up", "down")


def lower(net: Network) -> Network:
    blob = net.blob
    cfg = config_of(blob)
    nh, nkv, hd, S = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.max_seq_len
    shapes = stage_shapes(blob)
    weights = {name: Weights(shape, lambda name=name: stage_weight(blob, name)) for name, shape in shapes.items()}

    host = net.add_node(Node("host", "host", -1))
    host.outputs.add("embed", cfg.dim)
    host.inputs.add("logits", cfg.vocab_size)
    host.inputs.add("ratio", 1)
    head = head_params(blob)
    host.attrs["params"] = {"embed": blob["embed_fx"].numpy(), "scale_head": head["scale_head"], "q_max": head["q_max"]}

    prev = ("host", "embed")
    for i in range(cfg.n_layers):
        unit = net.add_node(Node(f"L{i}.unit", "unit", i))
        for seg, n in (("resid_in", cfg.dim), ("qkv", (nh + 2 * nkv) * hd), ("qk", nh * S), ("pv", nh * hd),
                       ("o", cfg.dim), ("gate_up", 2 * cfg.ffn_dim), ("down", cfg.dim)):
            unit.inputs.add(seg, n)
        for seg, n in (("qkv", cfg.dim), ("k_write", nkv * hd), ("v_write", nkv * hd), ("qk", nh * hd),
                       ("pv", nh * S), ("o", nh * hd), ("gate_up", cfg.dim), ("down", cfg.ffn_dim)):
            unit.outputs.add(seg, n)
        params = unit_params(blob, i)
        last = i == cfg.n_layers - 1
        if last:
            unit.outputs.add("head", cfg.dim)
            unit.outputs.add("ratio", 1)
            params["k_head"] = head["k_head"]
        else:
            unit.outputs.add("resid_out", cfg.dim)
        unit.attrs["params"] = params
        net.connect(*prev, unit.name, "resid_in")

        for k in STATIC_STAGES:
            w = weights[f"L{i}.{k}"]
            stage = net.add_node(Node(f"L{i}.{k}", "synapse", i, weight=w, attrs={"weight_bits": blob["quant"]["weight_bits"]}))
            stage.inputs.add("in", w.shape[1])
            stage.outputs.add("out", w.shape[0])
            net.connect(unit.name, k, stage.name, "in")
            net.connect(stage.name, "out", unit.name, k)

        kv_attrs = {"n_heads": nh, "n_kv_heads": nkv, "head_dim": hd, "max_seq_len": S, "weight_bits": blob["quant"]["kv_bits"]}
        qk = net.add_node(Node(f"L{i}.qk", "kv_qk", i, attrs=dict(kv_attrs)))
        qk.inputs.add("spikes", nh * hd)
        qk.inputs.add("write", nkv * hd)
        qk.outputs.add("out", nh * S)
        pv = net.add_node(Node(f"L{i}.pv", "kv_pv", i, attrs=dict(kv_attrs)))
        pv.inputs.add("spikes", nh * S)
        pv.inputs.add("write", nkv * hd)
        pv.outputs.add("out", nh * hd)
        for stage, seg in ((qk, "qk"), (pv, "pv")):
            net.connect(unit.name, seg, stage.name, "spikes")
            net.connect(unit.name, "k_write" if seg == "qk" else "v_write", stage.name, "write")
            net.connect(stage.name, "out", unit.name, seg)
        prev = (unit.name, "resid_out")

    w = weights["head"]
    stage = net.add_node(Node("head", "synapse", cfg.n_layers, weight=w, attrs={"weight_bits": blob["quant"]["weight_bits"]}))
    stage.inputs.add("in", w.shape[1])
    stage.outputs.add("out", w.shape[0])
    last_unit = f"L{cfg.n_layers - 1}.unit"
    net.connect(last_unit, "head", "head", "in")
    net.connect("head", "out", "host", "logits")
    net.connect(last_unit, "ratio", "host", "ratio")
    return net
