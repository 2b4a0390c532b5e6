"""Per-point precision and spike codes: recorded in model.pt and the build, honoured by every
backend bit for bit."""

import numpy as np
import pytest
from conftest import tiny_converted
from test_lava import compiled_runs_equal

from sdllm import codes
from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model, passes
from sdllm.formats import build as buildformat
from sdllm.formats import model as modelformat
from sdllm.formats.model import QuantSpec
from sdllm.stages import POINTS

MIXED = QuantSpec(weight_bits=4, act_bits=3, attn_bits=3, kv_bits=6, point_bits=(("down", 6), ("q", 5)), thetas=(("o", 1),))


@pytest.fixture(scope="module")
def mixed_model():
    """The tiny model with 3-bit ternary trains everywhere but down_proj's input (6-bit bit planes)
    and the queries (5-bit bit planes), 6-bit keys and values, and a dead zone on the o input."""
    return tiny_converted(MIXED)


def test_per_point_bits_round_trip_through_model_pt_and_the_build(mixed_model, tmp_path):
    modelformat.save(mixed_model, str(tmp_path / "m.pt"))
    again = modelformat.load(str(tmp_path / "m.pt"))
    assert again.quant == MIXED
    emit(compile_model(again, "loihi2", passes(code="paper")), str(tmp_path / "b"))
    build = buildformat.read(str(tmp_path / "b"))
    assert build.quant == MIXED
    expected = {"qkv": (3, "ternary"), "q": (5, "bitplane"), "p": (3, "ternary"), "o": (3, "ternary"),
                "gate_up": (3, "ternary"), "down": (6, "bitplane"), "head": (3, "ternary"), "k": (6, None), "v": (6, None)}
    assert {name: (MIXED.at(p, None).bits, codes.reference(MIXED.at(p, None).bits) if p.spiked else None)
            for name, p in POINTS.items()} == expected
    windows = {name: (w.steps, w.code) for name, w in build.schedule.stages.items()}
    assert windows["L1.qkv"] == (3, "ternary") and windows["L1.qk"] == (4, "bitplane") and windows["L1.down"] == (5, "bitplane")
    unit = next(c for c in build.cores if c.type == "neuron_unit")
    assert (unit.params["qmax_down"], unit.params["qmax_q"], unit.params["qmax_k"], unit.params["theta_o"]) == (31, 15, 31, 1)


@pytest.mark.parametrize("code", ["auto", "paper", "ternary", "naf", "graded"])
def test_every_backend_equals_the_reference_in_every_code(mixed_model, tmp_path, code):
    """The same integers whatever carries them: tokens, logits and per-core SOPs (counted in the
    build's own codes) equal on Lava, lockstep, fast and the integer reference."""
    build = compiled_runs_equal(mixed_model, tmp_path / "b", b"mix", 4, code, lockstep=True)
    if code not in ("auto", "paper"):
        assert {w.code for w in build.schedule.stages.values()} == {code}


# bits per layer: layer 0's down_proj input at 6 bits, layer 1's q/k/v input and queries at 5, the
# head's input at 4; layer 0's gate/up weights at 8 bits, layer 1's o weights at 3, the head's at 6
LAYERED = QuantSpec(weight_bits=4, act_bits=3, attn_bits=3, kv_bits=6,
                    layer_bits=(("L0.down", 6), ("L1.q", 5), ("L1.qkv", 5), ("head", 4)),
                    layer_weight_bits=(("L0.gate_up", 8), ("L1.o", 3), ("head", 6)))


@pytest.fixture(scope="module")
def layered_model():
    return tiny_converted(LAYERED)


def test_per_layer_bits_fix_the_integers_each_layer_carries(layered_model):
    """Independent of the spec's own accessors: the stored weights and the reference's integers
    stay within each layer's own range, and the wider layers use their range."""
    from sdllm.models.integer.reference import IntegerSDLLM

    w = {name: int(np.abs(layered_model.weight(name)).max()) for name in ("L0.gate_up", "L1.gate_up", "L1.o", "L0.o", "head")}
    assert w["L0.gate_up"] <= 127 and w["L0.gate_up"] > 7  # 8-bit weights use more than a 4-bit range
    assert w["L1.gate_up"] <= 7 and w["L0.o"] <= 7 and w["L1.o"] <= 3 and 7 < w["head"] <= 31
    _, spikes = IntegerSDLLM(layered_model).forward(list(b"per layer bits"))
    top = {name: int(np.abs(q).max()) for name, q in spikes.items()}
    assert 3 < top["L0.down"] <= 31 and top["L1.down"] <= 3  # 6 bits in layer 0, 3 in layer 1
    assert 3 < top["L1.qkv"] <= 15 and top["L0.qkv"] <= 3
    assert 3 < top["L1.qk"] <= 15 and top["L0.qk"] <= 3  # the queries: 5 bits in layer 1
    assert 3 < top["head"] <= 7


def test_per_layer_bits_round_trip_through_model_pt_and_the_build(layered_model, tmp_path):
    modelformat.save(layered_model, str(tmp_path / "m.pt"))
    again = modelformat.load(str(tmp_path / "m.pt"))
    assert again.quant == LAYERED and np.array_equal(again.weight("L0.gate_up"), layered_model.weight("L0.gate_up"))
    emit(compile_model(again, "loihi2", passes(code="paper")), str(tmp_path / "b"))
    build = buildformat.read(str(tmp_path / "b"))
    assert build.quant == LAYERED
    windows = {name: (w.steps, w.code) for name, w in build.schedule.stages.items()}
    assert windows["L0.down"] == (5, "bitplane") and windows["L1.down"] == (3, "ternary")
    assert windows["L0.qkv"] == (3, "ternary") and windows["L1.qkv"] == (4, "bitplane") and windows["L1.qk"] == (4, "bitplane")
    assert windows["head"] == (7, "ternary")
    units = {c.layer: c.params for c in build.cores if c.type == "neuron_unit"}
    assert (units[0]["qmax_down"], units[1]["qmax_down"], units[0]["qmax_qkv"], units[1]["qmax_qkv"]) == (31, 3, 3, 15)
    assert units[1]["qmax_head"] == 7
    synapse_bits = {(c.node, c.params["weight_bits"]) for c in build.cores if c.type == "synapse"}
    assert {("L0.gate_up", 8), ("L1.gate_up", 4), ("L1.o", 3), ("L0.o", 4), ("head", 6)} <= synapse_bits


@pytest.mark.parametrize("code", ["auto", "paper"])
def test_per_layer_bits_run_equal_to_the_reference_on_lava_and_fast(layered_model, tmp_path, code):
    compiled_runs_equal(layered_model, tmp_path / "b", b"lay", 3, code)


def test_per_layer_tables_name_layers_the_model_has(layered_model, tmp_path):
    import dataclasses

    from sdllm.errors import SdllmError

    with pytest.raises(SdllmError, match=r"^layer_bits name: one of L\{layer\}\.\{qkv\|q\|p\|o\|gate_up\|down\}, head, got 'L0.k'$"):
        QuantSpec(layer_bits=(("L0.k", 6),))  # keys are not a spike point: their bits are kv_bits
    with pytest.raises(SdllmError, match=r"^layer_weight_bits L0.o: must be within 2..8, got 9$"):
        QuantSpec(layer_weight_bits=(("L0.o", 9),))
    wide = dataclasses.replace(layered_model.quant, layer_bits=(("L7.down", 6),))
    modelformat.save_blob({**layered_model.to_blob(), "quant": wide.to_dict()}, str(tmp_path / "m.pt"))
    with pytest.raises(SdllmError, match=r"quant: layer_bits L7.down: layer 7 beyond the model's 2 layers \(0..1\)$"):
        modelformat.load(str(tmp_path / "m.pt"))


def test_a_version_1_model_pt_reads_with_one_activation_width(tiny_model, tmp_path):
    blob = tiny_model.to_blob()
    q = tiny_model.quant
    blob["format_version"] = 1
    blob["quant"] = {"weight_bits": q.weight_bits, "act_bits": q.act_bits, "kv_bits": q.kv_bits, "theta": 0,
                     "rotate": q.rotate, "gptq": q.gptq, "calibrate_gamma": q.calibrate_gamma, "seed": q.seed}
    blob.pop("rotation", None)  # version 1 had the random Hadamards only
    blob.pop("balance", None)  # and no channel balancing
    modelformat.save_blob(blob, str(tmp_path / "old.pt"))
    old = modelformat.load(str(tmp_path / "old.pt"))
    assert old.quant.attn_bits == q.act_bits
    assert old.quant.rotation == "hadamard" and old.rotation is None
    assert old.quant.balance == 0 and old.balance is None


def test_a_version_2_model_pt_from_before_learned_rotations_reads_with_its_hadamards(tiny_model, tmp_path):
    """Format-2 files written before quant.rotation, rotation_steps and balance existed."""
    import dataclasses

    old_spec = dataclasses.replace(tiny_model.quant, rotation="hadamard", balance=0.0)
    blob = dataclasses.replace(tiny_model, quant=old_spec, rotation=None, balance=None).to_blob()
    for key in ("rotation", "rotation_steps", "balance"):
        del blob["quant"][key]
    modelformat.save_blob(blob, str(tmp_path / "old.pt"))
    old = modelformat.load(str(tmp_path / "old.pt"))
    assert old.quant == old_spec and old.rotation is None and old.balance is None


def test_bit_planes_cost_fewer_spikes_than_ternary_trains_of_the_same_integers(default_model):
    """The same 8-bit queries and probabilities: 127-step ternary trains, or 7 bit planes."""
    from sdllm.models.integer.reference import IntegerSDLLM

    ref = IntegerSDLLM(default_model)
    _, spikes = ref.forward(list(b"The if statement"))
    q = spikes["L1.pv"]
    events = ref.spike_events("L1.pv", q, "bitplane")
    assert codes.reference(default_model.quant.attn_bits) == "bitplane" and codes.steps("bitplane", 8) == 7
    assert np.array_equal(events, np.vectorize(lambda v: bin(int(v)).count("1"))(q))
    assert events.sum() < np.abs(q).sum()


def test_dead_zones_are_calibrated_within_the_budget(default_model):
    """Each raised θ saves synaptic operations and the calibration perplexity stays within the budget."""
    from sdllm.models.conversion.clipping import calibrate_dead_zones
    from sdllm.models.source.corpus import calibration_windows

    rows = calibration_windows(default_model.tokenizer, 128, 2)
    thetas, trace = calibrate_dead_zones(default_model, rows, 0.05)
    ppl0, sops0 = trace[0][1:]
    assert thetas and all(t >= 1 for _, t in thetas)
    for (_, ppl, sops), (_, _, before) in zip(trace[1:], trace):
        assert ppl <= 1.05 * ppl0 and sops < before
    assert trace[-1][2] < sops0 and dict(thetas) == {k: v for k, v in trace[-1][0].items() if v}
