"""A high-precision channel group (`QuantSpec.wide_channels`): the learned rotation puts the
residual's highest-variance directions first, and the points that read the residual carry those
channels at 8 bits with the same per-token step as the rest — recorded in model.pt and the
build, and run bit for bit on every backend."""

import dataclasses

import numpy as np
import pytest
from conftest import TINY, tiny_converted
from test_lava import compiled_runs_equal

from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model, passes
from sdllm.errors import SdllmError
from sdllm.formats import build as buildformat
from sdllm.formats import model as modelformat
from sdllm.formats.model import QuantSpec
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer import kernels
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.stages import ATTN_IN, MLP_IN

G = 4
WIDE = QuantSpec(weight_bits=4, act_bits=3, kv_bits=8, wide_channels=G)


@pytest.fixture(scope="module")
def wide_model():
    return tiny_converted(WIDE)


def oracle(x, k, q_max, wide, wide_max):
    """γ-quantile quantisation with a wide group, in exact rationals: the step m/Q with m the k-th
    smallest |x| of the channels after the group; the group clipped at ±wide_max, the rest at ±Q."""
    from fractions import Fraction

    out = []
    for row in x.tolist():
        m = max(sorted(abs(v) for v in row[wide:])[k], 1)
        q = []
        for j, v in enumerate(row):
            r = Fraction(v * q_max, m)
            n = int(abs(r) + Fraction(1, 2)) * (1 if r >= 0 else -1)  # half away from zero
            lim = wide_max if j < wide else q_max
            q.append(max(-lim, min(lim, n)))
        out.append(q)
    return np.array(out)


def test_norm_quantize_with_a_wide_group_equals_the_rational_oracle():
    rng = np.random.default_rng(3)
    x = rng.integers(-5000, 5000, (40, 24))
    x[:, :3] *= 30  # the group: the row's largest values
    for k in (0, 10, 20):
        want = oracle(x, k, 7, 3, 127)
        m = np.maximum(np.sort(np.abs(x[:, 3:]), axis=1)[:, k], 1)  # the step's m: the rest's order statistic
        for ops in (kernels, fx):
            q, ratio = ops.norm_quantize(x, k, 7, 0, 1, 3, 127)
            assert np.array_equal(q, want)
            assert np.array_equal(ratio, fx.round_div(m << fx.RATIO_FRAC, fx.rms(x, 1)))
        assert np.abs(want[:, :3]).max() > 7 and np.abs(want[:, 3:]).max() <= 7
    # without a group: as before
    assert np.array_equal(kernels.norm_quantize(x, 10, 7, 0, 1)[0], oracle(x, 10, 7, 0, 0))


def test_the_rotation_puts_the_highest_variance_channels_in_the_group(wide_model):
    """Independent of the spec: the reference's integers at the residual readers are larger in the
    group's channels than in the rest, and exceed the rest's ±Q there."""
    _, spikes = IntegerSDLLM(wide_model).forward(list(b"wide channels!"))
    q_step = 2 ** (WIDE.act_bits - 1) - 1
    for name in ("L1.qkv", "L1.gate_up", "head"):
        q = np.abs(spikes[name])
        assert q[:, G:].max() <= q_step
        assert q[:, :G].max() > q_step and q[:, :G].mean() > q[:, G:].mean(), name
    for name in ("L0.o", "L1.down"):
        assert np.abs(spikes[name]).max() <= q_step  # the other points keep their bits


def test_a_wide_group_round_trips_through_model_pt_and_the_build(wide_model, tmp_path):
    modelformat.save(wide_model, str(tmp_path / "m.pt"))
    again = modelformat.load(str(tmp_path / "m.pt"))
    assert again.quant == WIDE
    at = again.quant.at(ATTN_IN, 1)
    assert (at.bits, at.step_bits, at.wide, at.q_max, at.step_max) == (8, 3, G, 127, 3)
    assert "qkv, gate_up, head 3-bit with 4 channels 8-bit" in again.quant.precision()
    emit(compile_model(again, "loihi2", passes(code="paper")), str(tmp_path / "b"))
    build = buildformat.read(str(tmp_path / "b"))
    assert build.quant == WIDE
    unit = {c.layer: c.params for c in build.cores if c.type == "neuron_unit"}
    assert (unit[0]["qmax_qkv"], unit[0]["wide_qkv"], unit[0]["wide_qmax_qkv"]) == (3, G, 127)
    assert (unit[1]["wide_head"], unit[1]["wide_gate_up"]) == (G, G) and "wide_down" not in unit[0]
    windows = {name: (w.steps, w.code) for name, w in build.schedule.stages.items()}
    assert windows["L0.qkv"] == windows["L0.gate_up"] == (7, "bitplane")  # 8-bit codes (7 planes), as the group needs
    assert windows["L0.o"] == (3, "ternary")


@pytest.mark.parametrize("code", ["auto", "paper", "naf", "graded"])
def test_a_wide_group_runs_equal_to_the_reference_on_lava_lockstep_and_fast(wide_model, tmp_path, code):
    compiled_runs_equal(wide_model, tmp_path / "b", b"wide", 4, code, lockstep=True)


def test_a_build_whose_unit_holds_a_group_the_quant_lacks_is_refused(wide_model, tmp_path):
    narrow = dataclasses.replace(wide_model, quant=dataclasses.replace(WIDE, wide_channels=0))
    emit(compile_model(narrow, "loihi2", passes(code="paper")), str(tmp_path / "b"))
    import json

    path = tmp_path / "b" / "network.json"
    doc = json.loads(path.read_text())
    unit = next(c for c in doc["cores"] if c["type"] == "neuron_unit")
    unit["params"]["wide_gate_up"] = 2
    path.write_text(json.dumps(doc))
    with pytest.raises(SdllmError, match=r"params\.wide_gate_up: expected nothing \(the model's quant has no wide group there\), found 2$"):
        buildformat.read(str(tmp_path / "b"))


def test_a_wide_group_the_model_or_the_rotation_cannot_take_is_one_line():
    with pytest.raises(SdllmError, match=r"^--wide-channels: needs the learned rotation \(--rotation learned\), got hadamard$"):
        QuantSpec(wide_channels=4, rotation="hadamard")
    with pytest.raises(SdllmError, match=r"^--wide-channels: must be within 0\.\.65536, got -1$"):
        QuantSpec(wide_channels=-1)
    with pytest.raises(SdllmError, match=rf"^--wide-channels: must be below the model's dim {TINY.dim}, got {TINY.dim}$"):
        QuantSpec(wide_channels=TINY.dim).check_model(TINY)


def test_the_group_lowers_the_fake_quant_error_of_the_residual_readers(wide_model):
    """What the group is for: the residual readers' integers carry the float activations more
    closely (the same γ-calibrated model, its residual readers measured against the float ones)."""
    import torch

    from sdllm.models.conversion.fakequant import FakeQuantSDLLM
    from sdllm.models.source.llama import Llama

    torch.manual_seed(1)
    float_model = Llama(TINY)
    with torch.no_grad():
        for p in float_model.parameters():
            p.normal_(0, 0.3)
    narrow = tiny_converted(dataclasses.replace(WIDE, wide_channels=0))
    tokens = torch.tensor([list(b"wide channels!")])
    errors = {}
    for name, model in (("wide", wide_model), ("narrow", narrow)):
        fq = FakeQuantSDLLM(float_model, model)
        err = []

        def tap(tap_name, x, fq=fq, err=err):
            out = fq.tap(tap_name, x)
            if tap_name.rsplit(".", 1)[-1] in (ATTN_IN.name, MLP_IN.name):
                err.append(float(((out - x) ** 2).sum() / (x**2).sum()))
            return out

        with torch.no_grad():
            fq.model(tokens, tap=tap)
        errors[name] = np.mean(err)
    assert errors["wide"] < 0.85 * errors["narrow"], errors  # 0.035 against 0.045 (a random model has no outliers)


def test_a_budget_searched_from_a_wide_group_keeps_it_and_runs_equal_to_the_reference(tmp_path):
    """`--budget R --wide-channels G`: the search chooses bits for the points outside the group
    (the residual's readers are carried by it), and what it returns compiles and runs bit for bit."""
    import sdllm
    from sdllm import stages

    model = sdllm.convert(budget=1.2, calib_windows=2, budget_windows=2, wide_channels=8, rotation_steps=10).file
    assert model.quant.wide_channels == 8 and model.budget["measured_ratio"] <= 1.2
    assert not any(stages.parse_tap(tap)[0] in stages.RESIDUAL_READERS for tap, _ in model.quant.layer_bits)
    compiled_runs_equal(model, tmp_path / "b", b"def ", 2)


def test_the_ablation_of_a_wide_model_drops_the_group_with_the_learned_rotation():
    """Each ablation row is a spec a conversion takes (a group without the learned rotation is
    refused), and one row takes the group away alone."""
    from sdllm.models.evaluation.evaluate import ablation_specs

    rows = {label: spec for label, spec, _, _ in ablation_specs(WIDE)}
    assert rows["no wide channel group"] == dataclasses.replace(WIDE, wide_channels=0)
    assert all(spec.wide_channels == (G if spec.rotate and spec.rotation == "learned" else 0)
               for label, spec in rows.items() if label != "no wide channel group")
