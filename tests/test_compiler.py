import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import compile_split, write_hw

from sdllm import nibbles
from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model, passes
from sdllm.cores.synapse import synapse_arrays
from sdllm.errors import SdllmError
from sdllm.formats.build import expand
from sdllm.formats.build import read as load_build


def _carried(net):
    """(source core, output index) -> [(destination core, axon)] over every routing table."""
    out = {}
    for core in net.cores:
        for dest, table in net.routes[core.id].routes:
            for s_local, d_local in zip(*expand(table)):
                out.setdefault((core.id, int(s_local)), []).append((dest, int(d_local)))
    return out


def test_every_operator_graph_edge_is_routed_exactly_once(tiny_model, tmp_path):
    net = compile_split(tiny_model, tmp_path)
    assert any(c.type == "reduce" for c in net.cores), "expected fan-in tiles with reduce cores"
    carried = _carried(net)
    delivered = {}  # (src node, output, dst node, input) -> [(producer core, consumer core)]
    for (cid, s_local), dests in carried.items():
        core = net.cores[cid]
        for dest, d_local in dests:
            d = net.cores[dest]
            if core.partial:  # a partial sum: to the reduce core that adds its fan-in part
                n = int(core.neurons[s_local])
                r0 = int(d.neurons[0])
                assert d.type == "reduce" and d.node == core.node
                assert d_local == core.params["fan_in_part"] * d.n_neurons + n - r0
                continue
            key = (core.node, int(core.neurons[s_local]), d.node, int(d.axons[d_local]))
            delivered.setdefault(key, []).append((core.id, d.id))
    expected = set()
    for src, dst, e in net.graph.edges.edges(data=True):
        s0, _ = net.nodes[src].outputs.range(e["src_seg"])
        d0, _ = net.nodes[dst].inputs.range(e["dst_seg"])
        for k in range(e["size"]):
            expected.add((src, s0 + k, dst, d0 + k))
    assert set(delivered) == expected
    for (node, s_idx, dst, d_idx), pairs in delivered.items():
        producers = [c.id for c in net.producers(node) if s_idx in set(c.neurons.tolist())]
        consumers = [c.id for c in net.consumers(dst) if d_idx in set(c.axons.tolist())]
        # exactly once from each core that produces it to each core with an axon for it
        assert sorted(pairs) == sorted((p, q) for p in producers for q in consumers)
    for c in net.cores:  # every partial sum reaches exactly one reduce core, once
        if c.partial:
            assert all(len(carried.get((c.id, k), [])) == 1 for k in range(c.n_neurons))


def test_every_core_is_within_its_limits(default_model):
    net = compile_model(default_model, "loihi2")
    lim = net.hw.core
    for c in net.cores:
        if c.type != "host_io":
            assert c.n_neurons <= lim.max_neurons and c.n_axons <= lim.max_input_axons
            assert c.synapse_bits <= lim.synapse_memory_bits and net.routes[c.id].n_routes <= lim.max_output_routes


def test_synapse_tiles_hold_exactly_the_stage_weights(tiny_model, tmp_path):
    net = compile_split(tiny_model, tmp_path)
    for node in net.nodes.values():
        if node.kind != "synapse":
            continue
        weight = node.weight.load()
        rebuilt = np.zeros(weight.shape, np.int64)
        for c in net.cores_of(node.name):
            if c.type == "reduce":
                continue
            arrays = synapse_arrays(c, weight)
            if c.params["encoding"] == "dense":
                dense = nibbles.unpack(arrays["weight_nibbles"], c.n_neurons * c.n_axons).reshape(c.n_neurons, c.n_axons)
                rebuilt[np.ix_(c.neurons, c.axons)] += dense
                continue
            ptr, idx, w = arrays["axon_ptr"], arrays["neuron_index"], arrays["weight"]
            axon = np.repeat(np.arange(c.n_axons), np.diff(ptr))
            rebuilt[c.neurons[idx], c.axons[axon]] += w
        assert np.array_equal(rebuilt, weight)


def test_schedule_matches_the_timestep_contract(tiny_model):
    """3-bit ternary trains (3 steps) into the linear layers, 8-bit bit planes (7 steps) into Q·Kᵀ and P·V."""
    net = compile_model(tiny_model, "loihi2", passes(code="paper"))
    s = net.schedule
    windows = {name: (w.steps, w.code) for name, w in s.stages.items()}
    assert windows["L0.qkv"] == windows["L1.down"] == windows["head"] == (3, "ternary")
    assert windows["L0.qk"] == windows["L1.pv"] == (7, "bitplane")
    layer = 4 * (3 + 1) + 2 * (7 + 1) + 1  # each stage's window and one step to the unit; one to hand on
    assert s.period == tiny_model.config.n_layers * layer + 3 + 1 and not s.reduced
    for i in range(2):  # each stage starts the step after the unit emits it
        assert [s.stages[f"L{i}.{k}"].first for k in ("qkv", "qk", "pv", "o", "gate_up", "down")] == [
            e + 1 for e in s.layers[i].emit[:6]]


def test_reduce_cores_add_one_step_to_their_stage(tiny_model, tmp_path):
    s = compile_split(tiny_model, tmp_path).schedule
    emits = s.layers[0].emit
    assert "L0.gate_up" in s.reduced and "L0.qk" not in s.reduced
    gate_up, qk = s.stages["L0.gate_up"].steps, s.stages["L0.qk"].steps
    assert emits[5] - emits[4] == gate_up + 2 and emits[2] - emits[1] == qk + 1  # gate_up reduced, qk not


def test_compiling_twice_gives_identical_bytes(default_model, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    emit(compile_model(default_model, "loihi2", passes(rate_tokens=16)), str(a))
    emit(compile_model(default_model, "loihi2", passes(rate_tokens=16)), str(b))
    cmp = filecmp.dircmp(a, b)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    assert not filecmp.dircmp(a / "arrays", b / "arrays").diff_files
    for f in os.listdir(a / "arrays"):
        assert (a / "arrays" / f).read_bytes() == (b / "arrays" / f).read_bytes()


def test_too_small_target_is_rejected_with_one_clear_line(default_model_path, tmp_path):
    out = tmp_path / "build"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", default_model_path, "--target", "loihi2_tiny", "-o", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "out of cores" in p.stderr and "target loihi2-tiny has 4" in p.stderr
    assert not out.exists()


def test_a_code_the_target_lacks_is_refused_in_one_line(default_model_path, tmp_path):
    """loihi2_tiny's cores take ±1 spikes only (no spike_codes: the binary codes)."""
    out = tmp_path / "build"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", default_model_path, "--target", "loihi2_tiny",
                        "--code", "graded", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "--code graded: target loihi2-tiny takes ternary, bitplane, naf, not graded" in p.stderr
    assert not out.exists()


def test_a_kv_cache_too_big_for_any_core_names_stage_and_sizes(default_model, tmp_path):
    with pytest.raises(SdllmError, match=r"stage L0\.qk: one head's KV cache needs 33792 synapse bits and 64 axons, "
                                         r"a core holds 32768 bits and 4096 axons"):
        compile_model(default_model, write_hw(tmp_path, synapse_memory_bits=32768))


def test_a_core_limit_violation_names_stage_limit_and_values(default_model, tmp_path):
    with pytest.raises(SdllmError, match=r"stage L0\.qkv: core L0\.qkv\[0\]: graded-spike payload [\d,]+ exceed the 127 available"):
        compile_model(default_model, write_hw(tmp_path, graded_payload_bits=8))


def test_build_is_self_contained(default_build):
    b = load_build(default_build)
    assert b.doc["format_version"] == 5 and b.schedule.period > 0 and 0 < b.schedule.interval < b.schedule.period
    assert {c.type for c in b.cores} == {"host_io", "neuron_unit", "synapse", "kv_qk", "kv_pv"}


def test_systems_inherit_the_chip_and_check_their_topology(tmp_path):
    from sdllm.errors import SdllmError
    from sdllm.formats import hw

    chip, board, hala = hw.load("loihi2"), hw.load("kapoho_point"), hw.load("hala_point")
    assert board.core == chip.core and board.energy == chip.energy and board.chips == 8
    assert hala.chips == 1152 and hala.total_cores == 140544
    assert hala.chip_hops(0, 1151) == 11 + 11 + 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: loihi2\nsystem:\n  chips: 8\n  topology: [3, 3, 1]\n")
    with pytest.raises(SdllmError, match=r"system.topology: expected 3 positive sizes whose product is system.chips 8, found \[3, 3, 1\]"):
        hw.load(str(bad))


def test_report_states_the_lower_bound(default_model, tiny_model, tmp_path):
    from sdllm.compiler.report import build_report

    r = build_report(compile_model(default_model, "loihi2"))
    assert r["cores_lower_bound"] == r["cores_used"]  # one core per stage fits
    r = build_report(compile_split(tiny_model, tmp_path))
    assert len(r["layers"]) < r["cores_lower_bound"] <= r["cores_used"]
    assert r["cores_over_bound"] == round(r["cores_used"] / r["cores_lower_bound"], 4)
    assert sum(layer["lower_bound"] for layer in r["layers"]) == r["cores_lower_bound"]


def test_routing_tables_are_compressed_to_runs_when_they_do_not_fit(default_model, tmp_path):
    net = compile_model(default_model, write_hw(tmp_path, max_output_routes=300))
    unit = net.routes[net.cores_of("L0.unit")[0].id]
    assert unit.compressed and unit.n_routes > 300 >= unit.entries == sum(len(t) for _, t in unit.routes)
    assert not net.routes[net.cores_of("L0.o")[0].id].compressed
    with pytest.raises(SdllmError, match=r"stage L0\.unit: core L0\.unit: routing-table entries \d+ exceed the 4 available"):
        compile_model(default_model, write_hw(tmp_path, max_output_routes=4))


def test_traffic_aware_placement_beats_the_greedy_baseline(tiny_model, tmp_path):
    hw = write_hw(tmp_path, max_input_axons=24, synapse_memory_bits=8000, chip={"cores_per_chip": 64, "mesh": [8, 8]}, chips=4)
    greedy = compile_model(tiny_model, hw, passes=passes("greedy"))
    traffic = compile_model(tiny_model, hw, passes=passes("traffic"))
    g, t = greedy.placement.figures, traffic.placement.figures
    assert g["spike_hops_per_token"] == t["greedy_spike_hops_per_token"]
    assert t["spike_hops_per_token"] < 0.7 * g["spike_hops_per_token"]
    assert t["chip_crossings_per_token"] <= g["chip_crossings_per_token"]
    for net in (greedy, traffic):  # link loads: every chip pair's traffic over each link of its path
        p, hw = net.placement.figures, net.hw
        assert p["chip_traffic"] and all(hw.chip_hops(a, b) == 1 for a, b, _ in p["link_loads"])
        assert sum(x for *_, x in p["link_loads"]) == pytest.approx(sum(x * hw.chip_hops(a, b) for a, b, x in p["chip_traffic"]))
        assert p["chip_crossings_per_token"] == pytest.approx(sum(x for *_, x in p["link_loads"]))
    for net in (greedy, traffic):  # every physical core on its own position
        slots = [(net.chip(c.id), p) for c in net.cores if c.on_chip for p in net.positions(c.id)]
        assert len(slots) == len(set(slots)) == sum(c.span for c in net.cores if c.on_chip)


def test_neuron_units_wider_than_a_core_span_several(default_model, tmp_path):
    net = compile_model(default_model, write_hw(tmp_path, max_input_axons=512))
    unit = net.cores_of("L0.unit")[0]
    assert unit.span == -(-unit.n_axons // 512) > 1 and len(set(net.positions(unit.id))) == unit.span


def test_synthetic_models_compile_from_a_shape_file(tmp_path):
    shape = tmp_path / "shape.yaml"
    shape.write_text("vocab_size: 300\ndim: 64\nn_layers: 2\nn_heads: 4\nn_kv_heads: 2\nffn_dim: 96\nmax_seq_len: 32\n")
    out = tmp_path / "b"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", "--synthetic", str(shape), "--target", "loihi2", "-o", str(out), "-q"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    b = load_build(str(out))
    assert b.doc["model"]["synthetic"] and b.config.dim == 64 and (out / "report.html").is_file()
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", "--synthetic", "llama9", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not a known shape" in p.stderr


def test_dense_4bit_blocks_are_stored_two_weights_per_byte():
    values = np.array([-8, -7, -1, 0, 1, 7, 3])  # every sign, both extremes, an odd count
    packed = nibbles.pack(values)
    assert packed.dtype == np.int8 and len(packed) == 4
    assert nibbles.unpack(packed, len(values)).tolist() == values.tolist()
    grid = np.arange(-8, 8)[:, None] * np.ones(16, np.int64)  # every pair of nibbles
    pairs = np.stack([grid.reshape(-1), grid.T.reshape(-1)], 1).reshape(-1)
    assert np.array_equal(nibbles.unpack(nibbles.pack(pairs), len(pairs)), pairs)
    with pytest.raises(ValueError, match="nibbles hold -8..7, got -9..0"):
        nibbles.pack(np.array([-9, 0]))


def test_a_synthetic_build_has_the_recorded_bytes(tmp_path):
    """The build of a fixed synthetic shape is byte for byte the recorded one (tests/data): the
    compiler's output does not drift unnoticed; and it runs equal to the integer reference of the
    same synthetic model, so a recorded digest of a wrong build cannot pass. (report.html, a rendering, is compared by
    test_compiling_twice_gives_identical_bytes instead.)"""
    import hashlib

    data = os.path.join(os.path.dirname(__file__), "data")
    out = tmp_path / "b"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", "--synthetic", os.path.join(data, "small_shape.yaml"),
                        "--target", "loihi2", "-o", str(out), "-q"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(data, "small_shape_build.sha256")) as f:
        recorded = dict(reversed(line.split()) for line in f)
    found = {str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
             for path in sorted(out.rglob("*")) if path.is_file() and path.name != "report.html"}
    assert found == recorded
    # and those bytes compute the right thing: the integer reference of the same synthetic model
    from sdllm.formats.model import QuantSpec
    from sdllm.models.integer.reference import IntegerSDLLM
    from sdllm.models.source.synthetic import shape_of, synthetic_model
    from sdllm.runtime.fast import run_fast
    from sdllm.runtime.lockstep import run_lockstep

    model = synthetic_model(shape_of(os.path.join(data, "small_shape.yaml")), QuantSpec(weight_bits=4, act_bits=4, rotate=False, gptq=False))
    tokens, logits, _ = IntegerSDLLM(model).generate([5, 77, 260], 3)
    build = load_build(str(out))
    for run in (run_fast, run_lockstep):
        result = run(build, [5, 77, 260], 3)
        assert result.tokens == tokens and np.array_equal(result.logits, logits), run.__name__
