"""The perplexity budget (issue 23): bits per point and per layer chosen from measurements, the
budget met on calibration text the conversion did not fit to, as the integer reference measures it, recorded in model.pt,
compiled and run equal to the reference; a budget nothing reaches is one line."""

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_lava import compiled_runs_equal

import sdllm
from sdllm.errors import SdllmError
from sdllm.formats import model as modelformat
from sdllm.models.integer.likelihood import nll
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.corpus import calibration_tokens
from sdllm.models.source.importers import load_source

BUDGET = 1.05
OPTIONS = dict(calib_windows=2, budget_windows=2, rotation="hadamard")


@pytest.fixture(scope="module")
def budgeted():
    return sdllm.convert(budget=BUDGET, **OPTIONS).file


@pytest.fixture(scope="module")
def rows():
    """The windows the search measures on: the second budget_windows of 2 x budget_windows of the
    calibration text beside the calib_windows the conversion fits to (the first rank candidates)."""
    float_model, tok = load_source(None, None)
    seq = float_model.cfg.max_seq_len
    rows = np.asarray(calibration_tokens(tok, seq, 4, skip=2))
    fitted = {r.tobytes() for r in np.asarray(calibration_tokens(tok, seq, 2))}
    assert len(rows) == 4 and not any(r.tobytes() in fitted for r in rows)
    return float_model, rows[2:]


def _integer_ratio(model, float_model, rows) -> float:
    """Calibration perplexity of the integer reference over float's, computed here from scratch."""
    ref = IntegerSDLLM(model)
    total = flt = 0.0
    for row in rows:
        ref.reset()
        logits, _ = ref.forward(row[:-1])
        total += float(nll(logits, row[1:]).sum())
        with torch.no_grad():
            out = float_model(torch.from_numpy(row[None, :-1]))[0].double()
        flt += torch.nn.functional.cross_entropy(out, torch.from_numpy(row[1:]), reduction="sum").item()
    return math.exp((total - flt) / (rows.shape[0] * (rows.shape[1] - 1)))


def test_the_budget_is_met_on_the_calibration_text_and_costs_less_than_every_point_at_8_bits(budgeted, rows):
    float_model, calib = rows
    b = budgeted.budget
    ratio = _integer_ratio(budgeted, float_model, calib)
    assert ratio <= BUDGET and ratio == pytest.approx(b["measured_ratio"], rel=1e-9)
    assert b["default_ratio"] > BUDGET  # the uniform W4A4 start misses it: something was raised
    assert budgeted.quant.layer_bits or budgeted.quant.layer_weight_bits
    assert all(bits == 8 for _, bits in budgeted.quant.layer_bits + budgeted.quant.layer_weight_bits)
    assert (budgeted.quant.weight_bits, budgeted.quant.act_bits) == (4, 4)  # the rest stays the default
    n_points = 4 * budgeted.config.n_layers + 1
    assert len(budgeted.quant.layer_bits) < n_points or len(budgeted.quant.layer_weight_bits) < n_points
    assert b["default_energy"] < b["energy"] and b["objective"] == "SOPs"
    assert (b["fit"], b["cores_needed"], b["cores_available"]) == ("none", 0, 0)  # no target: no fit checked
    # raised weights are the 8-bit ones: wider than 4 bits somewhere
    for node, _ in budgeted.quant.layer_weight_bits:
        assert np.abs(budgeted.weight(node)).max() > 7


def test_a_sensitivity_measured_from_its_layer_equals_the_whole_fake_quant_forward(budgeted, rows):
    """The search measures a candidate from the start's residual stream entering its layer; the
    oracle: a fresh fake-quant model of the changed SDLLM run from the tokens."""
    from sdllm.models.conversion.budget import Sensitivity, fake_perplexity
    from sdllm.models.conversion.fakequant import FakeQuantSDLLM

    float_model, calib = rows
    start = budgeted.with_(quant=dataclasses.replace(budgeted.quant, layer_bits=(), layer_weight_bits=()))
    n = start.config.n_layers
    fq = FakeQuantSDLLM(float_model, start)
    sense = Sensitivity(fq, calib)
    assert sense.perplexity(n) == sense.perplexity(0) == fake_perplexity(FakeQuantSDLLM(float_model, start), calib)
    for tap, first in ((f"L{n - 1}.down", n - 1), ("head", n)):
        raised = start.with_(quant=dataclasses.replace(start.quant, layer_bits=((tap, 8),)))
        fq.retarget(raised)
        assert sense.perplexity(first) == fake_perplexity(FakeQuantSDLLM(float_model, raised), calib)
        assert sense.perplexity(first) != sense.perplexity(n) or tap == "head"
        fq.retarget(start)


def test_the_search_is_deterministic_and_round_trips_model_pt(budgeted, tmp_path):
    again = sdllm.convert(budget=BUDGET, **OPTIONS).file
    assert again.quant == budgeted.quant and again.budget == budgeted.budget
    assert all(np.array_equal(again.weight(k), budgeted.weight(k)) for k in budgeted.weights)
    modelformat.save(budgeted, str(tmp_path / "m.pt"))
    loaded = modelformat.load(str(tmp_path / "m.pt"))
    assert loaded.quant == budgeted.quant and loaded.budget == budgeted.budget and loaded.gamma == budgeted.gamma


def test_a_budgeted_model_compiles_and_runs_equal_to_the_reference_on_lava_and_fast(budgeted, tmp_path):
    build = compiled_runs_equal(budgeted, tmp_path / "b", b"def ", 2)
    assert build.quant == budgeted.quant


def test_a_budget_below_every_allocation_is_one_error_naming_the_best_ratio():
    from sdllm.models.conversion.budget import BudgetUnreachable

    with pytest.raises(BudgetUnreachable, match=r"^--budget 1: below what any allocation reaches on the calibration "
                                                r"text \(the best, every candidate at 8 bits: \d+\.\d{3} x float\)$") as e:
        sdllm.convert(budget=1.0, kv_bits=2, **OPTIONS)  # keys and values are no candidate: 2 bits stay 2 bits
    assert isinstance(e.value, ValueError) and isinstance(e.value, SdllmError)


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget=0.5), "--budget: must be within 1..1000 (a ratio to float perplexity), got 0.5"),
    (dict(budget="1.3"), "--budget: must be within 1..1000 (a ratio to float perplexity), got '1.3'"),
    (dict(budget=1.3, budget_windows=0), "--budget-windows: must be at least 1, got 0"),
    (dict(target="loihi2"), "--target: prices a --budget search; give --budget too"),
])
def test_bad_budget_arguments_are_one_line(kwargs, message):
    with pytest.raises(SdllmError) as e:
        sdllm.convert(**kwargs)
    assert str(e.value) == message


def test_calibration_text_with_no_window_left_beside_the_fitted_ones_is_one_line_before_any_work(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("x" * 300)  # two windows of 128 bytes: both fitted
    with pytest.raises(SdllmError) as e:
        sdllm.convert(calib_text=[str(mine)], budget=1.3, calib_windows=2, budget_windows=2)
    assert str(e.value) == ("--budget-windows: the budget search needs 2 windows of 128 tokens beside the 2 the "
                            "conversion fits to; the calibration text has 0 left (give more text or fewer --calib-windows)")


def test_the_command_reports_an_unreachable_budget_in_one_line_with_exit_code_2(tmp_path):
    out = tmp_path / "m.pt"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.convert", "-o", str(out), "--budget", "1", "--kv-bits", "2",
                        "--rotation", "hadamard", "--calib-windows", "2", "--budget-windows", "2"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2 and not out.exists()
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("sdllm-convert: error: --budget 1: below what any allocation reaches") and "Traceback" not in p.stderr


def test_a_lumpy_last_candidate_takes_the_shortest_prefix_before_it_that_with_it_is_within_the_budget():
    """A made-up additive world (the oracle: log ratio = start's minus the chosen gains): ten cheap
    candidates and a costly one whose gain alone nearly meets the budget; with it, 3 of the cheap ones do."""
    from sdllm.models.conversion.budget import Candidate, Cost, Prediction, with_shorter_prefix

    order = [Candidate("act", f"L{i}.down", log_gain=0.02, cost=1.0) for i in range(10)]
    order.append(Candidate("act", "head", log_gain=0.25, cost=30.0))
    start = 1.4

    def measure(chosen):
        ratio = start * math.exp(-sum(c.log_gain for c in chosen))
        return ratio * 10.0, {"x": sum(c.cost for c in chosen)}, {"x": 0}  # perplexity at float 10

    budget = start * math.exp(-0.25 - 3 * 0.02) * 1.0001
    spent = np.concatenate([[0.0], np.cumsum([c.cost for c in order])])
    predicted = Prediction([c.log_gain for c in order], start, start * math.exp(-sum(c.log_gain for c in order)))
    at_hi = measure(order)
    made = []
    chosen, rest, (ratio, sops, _, _), checks = with_shorter_prefix(
        order, len(order), (at_hi[0] / 10.0, *at_hi[1:], 0.0), spent, 100.0, predicted, budget, measure, 10.0,
        Cost(None), made.append)
    assert [c.name for c in chosen] == ["L0.down", "L1.down", "L2.down", "head"]
    assert [c.name for c in rest] == [f"L{i}.down" for i in range(3, 10)]
    assert ratio <= budget and sops["x"] == 33.0 and checks == len(made) <= 4
