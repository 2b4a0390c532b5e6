import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import compile_split, write_hw

from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model
from sdllm.errors import SdllmError
from sdllm.runtime.build import load_build


def test_every_operator_graph_edge_is_routed_exactly_once(tiny_blob, tmp_path):
    net = compile_split(tiny_blob, tmp_path)
    assert any(c.name.endswith(",1]") for c in net.cores), "expected fan-in tiles"
    carried = {}
    for core in net.cores:
        for dest, src, dst in core.routes:
            d = net.cores[dest]
            for s_local, d_local in zip(src, dst):
                key = (core.node, int(core.neurons[s_local]), d.node, int(d.axons[d_local]))
                carried.setdefault(key, []).append((core.id, d.id))
    expected = set()
    for src, dst, e in net.graph.edges(data=True):
        s0, _ = net.nodes[src].outputs.range(e["src_seg"])
        d0, _ = net.nodes[dst].inputs.range(e["dst_seg"])
        for k in range(e["size"]):
            expected.add((src, s0 + k, dst, d0 + k))
    assert set(carried) == expected
    for (node, s_idx, dst, d_idx), pairs in carried.items():
        producers = [c.id for c in net.cores_of(node) if s_idx in set(c.neurons.tolist())]
        consumers = [c.id for c in net.cores_of(dst) if d_idx in set(c.axons.tolist())]
        # exactly once from each core that produces it to each core with an axon for it
        assert sorted(pairs) == sorted((p, q) for p in producers for q in consumers)


def test_every_core_is_within_its_limits(default_blob):
    net = compile_model(default_blob, "loihi2")
    lim = net.hw.core
    for c in net.cores:
        if c.type != "host_io":
            assert c.n_neurons <= lim.max_neurons and c.n_axons <= lim.max_input_axons
            assert c.synapse_bits <= lim.synapse_memory_bits and c.n_routes <= lim.max_output_routes


def test_synapse_tiles_hold_exactly_the_stage_weights(tiny_blob, tmp_path):
    net = compile_split(tiny_blob, tmp_path)
    for node in net.nodes.values():
        if node.kind != "synapse":
            continue
        rebuilt = np.zeros_like(node.weight)
        for c in net.cores_of(node.name):
            ptr, idx, w = c.arrays["axon_ptr"], c.arrays["neuron_index"], c.arrays["weight"]
            axon = np.repeat(np.arange(c.n_axons), np.diff(ptr))
            rebuilt[c.neurons[idx], c.axons[axon]] += w
        assert np.array_equal(rebuilt, node.weight)


def test_schedule_matches_the_timestep_contract(tiny_blob):
    net = compile_model(tiny_blob, "loihi2")
    s = net.schedule
    T = s["timesteps_per_spike_train"]
    assert T == 3
    assert s["period"] == tiny_blob["config"]["n_layers"] * (6 * (T + 1) + 1) + T + 1
    for name, w in s["stages"].items():
        assert w["last"] - w["first"] == T - 1, name


def test_compiling_twice_gives_identical_bytes(default_blob, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    emit(compile_model(default_blob, "loihi2"), str(a))
    emit(compile_model(default_blob, "loihi2"), str(b))
    cmp = filecmp.dircmp(a, b)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    assert not filecmp.dircmp(a / "arrays", b / "arrays").diff_files
    for f in os.listdir(a / "arrays"):
        assert (a / "arrays" / f).read_bytes() == (b / "arrays" / f).read_bytes()


def test_too_small_target_is_rejected_with_one_clear_line(default_model_path, tmp_path):
    out = tmp_path / "build"
    p = subprocess.run([sys.executable, "-m", "sdllm.compiler.cli", default_model_path, "--target", "loihi2_tiny", "-o", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "out of cores" in p.stderr and "stage " in p.stderr and "target loihi2-tiny has 4" in p.stderr
    assert not out.exists()


def test_a_kv_cache_too_big_for_any_core_names_stage_and_sizes(default_blob, tmp_path):
    with pytest.raises(SdllmError, match=r"stage L0\.qk: one head's KV cache needs 87040 synapse bits, a core holds 65536"):
        compile_model(default_blob, write_hw(tmp_path, synapse_memory_bits=65536))


def test_a_core_limit_violation_names_stage_limit_and_values(default_blob, tmp_path):
    with pytest.raises(SdllmError, match=r"stage L0\.qkv: core L0\.qkv\[0\]: graded-spike payload [\d,]+ exceed the 127 available"):
        compile_model(default_blob, write_hw(tmp_path, graded_payload_bits=8))


def test_build_is_self_contained(default_build):
    b = load_build(default_build)
    assert b.doc["format_version"] == 1 and b.schedule["period"] > 0
    assert {c.type for c in b.cores} == {"host_io", "neuron_unit", "synapse", "kv_qk", "kv_pv"}


def test_systems_inherit_the_chip_and_check_their_topology(tmp_path):
    from sdllm.compiler import hw
    from sdllm.errors import SdllmError

    chip, board, hala = hw.load("loihi2"), hw.load("kapoho_point"), hw.load("hala_point")
    assert board.core == chip.core and board.energy == chip.energy and board.chips == 8
    assert hala.chips == 1152 and hala.total_cores == 140544
    assert hala.chip_hops(0, 1151) == 11 + 11 + 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: loihi2\nsystem:\n  chips: 8\n  topology: [3, 3, 1]\n")
    with pytest.raises(SdllmError, match=r"topology \[3, 3, 1\] .* system.chips 8"):
        hw.load(str(bad))


def test_report_states_the_lower_bound(default_blob, tiny_blob, tmp_path):
    from sdllm.compiler.report import build_report

    r = build_report(compile_model(default_blob, "loihi2"))
    assert r["cores_lower_bound"] == r["cores_used"]  # one core per stage fits
    r = build_report(compile_split(tiny_blob, tmp_path))
    assert len(r["layers"]) < r["cores_lower_bound"] <= r["cores_used"]
    assert r["cores_over_bound"] == round(r["cores_used"] / r["cores_lower_bound"], 4)
