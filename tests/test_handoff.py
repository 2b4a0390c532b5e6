"""Every graded value the chip carries fits the target's payload, for every input: the residual
hand-off is calibrated with headroom and saturates identically on every backend; the compiler
proves every core's payload; a build that cannot carry its values is refused before any run."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import write_hw

from sdllm import codes
from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model
from sdllm.errors import SdllmError
from sdllm.formats.build import read as load_build
from sdllm.formats.model import QuantSpec
from sdllm.models.conversion.convert import convert
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.integer.units import hand_off
from sdllm.models.source.corpus import calibration_tokens, tokens_of
from sdllm.models.source.importers import BYTES, default_float, load_float
from sdllm.runtime.fast import run_fast
from sdllm.runtime.lava_backend import run_lava
from sdllm.runtime.lockstep import run_lockstep

BIN = os.path.dirname(sys.executable)
SINK = 2  # byte STX: the token given a SmolLM2-sized activation
PAYLOAD_MAX = (1 << 23) - 1


def massive_float_model(size: float):
    """The default model with byte STX's embedding `size` in one channel: after the residual
    rotation spreads it, every channel holds ~size/sqrt(dim) — with size 30,000, 10.9 M in fixed
    point, as large as SmolLM2-135M's first token (beyond a 24-bit graded spike)."""
    model = load_float(default_float())
    with torch.no_grad():
        model.embed.weight[SINK] = 0
        model.embed.weight[SINK, 0] = size
    return model


@pytest.fixture(scope="module")
def sink_model():
    calib = calibration_tokens(BYTES, 128, 4)
    return convert(massive_float_model(30000.0), QuantSpec(rotation="hadamard"), calib, BYTES)


def test_graded_pieces_carry_every_value_exactly():
    rng = np.random.default_rng(0)
    for value_bits, payload_bits in ((32, 24), (48, 24), (32, 8), (24, 24), (16, 24)):
        pieces, bits = codes.graded_pieces(value_bits, payload_bits)
        assert pieces * bits >= value_bits - 1 and (pieces - 1) * bits < value_bits - 1
        top = (1 << (value_bits - 1)) - 1
        x = np.concatenate([rng.integers(-top, top + 1, 5000), [0, top, -top, 1, -1, (1 << bits) - 1, 1 << bits]])
        x = x[np.abs(x) <= top]
        d = codes.split_pieces(x[None], pieces, bits)
        assert np.array_equal(codes.join_pieces(d, pieces, bits)[0], x)
        assert np.abs(d).max() <= codes.piece_max(top, pieces, bits) <= (1 << (payload_bits - 1)) - 1
        small = np.abs(x) < 1 << bits
        assert not d.reshape(pieces, -1)[1:, small].any()  # a value within one piece sends one spike


def _equal_on_every_backend(model, build_dir, prompt, n_new):
    emit(compile_model(model, "loihi2"), build_dir)
    build = load_build(build_dir)
    tokens, logits, _ = IntegerSDLLM(model).generate(prompt, n_new)
    for run in (run_fast, run_lockstep):
        result = run(build, prompt, n_new)
        assert result.tokens == tokens and np.array_equal(result.logits, logits), run.__name__
    result = run_lava(build, prompt, n_new, "chip")
    assert result.tokens == tokens and np.array_equal(result.logits, logits)
    return build


def test_a_first_token_as_large_as_smollm2s_runs_equal_on_every_backend(sink_model, tmp_path):
    prompt = [SINK, *tokens_of(BYTES, "The if")]
    trace = {}
    IntegerSDLLM(sink_model).forward(prompt, trace=trace)
    handed = np.abs(trace["L0.resid"]).max()
    assert PAYLOAD_MAX < handed < sink_model.config.resid_max  # one 24-bit graded spike would not hold it; no saturation
    build = _equal_on_every_backend(sink_model, str(tmp_path / "b"), prompt, 2)
    unit = next(c for c in build.cores if c.type == "neuron_unit" and c.layer == 0)
    assert (unit.params["resid_pieces"], unit.params["resid_piece_bits"]) == (2, 23)


def test_a_residual_beyond_its_bits_saturates_the_same_on_every_backend(default_model, tmp_path):
    embed = default_model.embed_fx.copy()
    embed[SINK] = np.where(np.arange(embed.shape[1]) % 2, 1, -1) << 34  # beyond the 27-bit hand-off of dim 128
    model = default_model.with_(embed_fx=embed)
    resid_max = model.config.resid_max
    assert np.abs(hand_off(embed[SINK], {"resid_max": resid_max})).max() == resid_max == (1 << 26) - 1  # saturated
    _equal_on_every_backend(model, str(tmp_path / "b"), [SINK, *tokens_of(BYTES, "ab")], 2)


def test_a_target_with_narrow_payloads_carries_the_residual_in_more_pieces(default_model, tmp_path):
    net = compile_model(default_model, write_hw(tmp_path, graded_payload_bits=22))
    unit = next(c for c in net.cores if c.type == "neuron_unit" and c.layer == 0)
    assert default_model.config.resid_bits == 27
    assert (unit.params["resid_pieces"], unit.params["resid_piece_bits"]) == (2, 21)
    assert net.nodes["L0.unit"].outputs.sizes["resid_out"] == 2 * default_model.config.dim
    assert unit.payload_bound == (1 << 21) - 1


def test_a_build_that_cannot_carry_its_values_is_refused_by_every_backend_alike(default_build, tmp_path):
    bad = tmp_path / "build"
    shutil.copytree(default_build, bad)
    doc = json.loads((bad / "network.json").read_text())
    doc["hw"]["core"]["graded_payload_bits"] = 16
    (bad / "network.json").write_text(json.dumps(doc))
    lines = set()
    for backend in ("lava", "lockstep", "fast"):
        p = subprocess.run([os.path.join(BIN, "sdllm-run"), str(bad), "--prompt", "ab", "--max-new-tokens", "2",
                            "--backend", backend], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        lines.add(p.stderr)
    (line,) = lines
    assert "cores[0].params.resid_piece_bits: expected 15, found 23" in line  # the host, compiled for 24 bits


def test_a_payload_bound_below_what_the_tables_send_is_refused(default_build, tmp_path):
    bad = tmp_path / "build"
    shutil.copytree(default_build, bad)
    doc = json.loads((bad / "network.json").read_text())
    core = next(c for c in doc["cores"] if c["type"] == "synapse")
    core["payload_bound"] = 1
    (bad / "network.json").write_text(json.dumps(doc))
    with pytest.raises(SdllmError, match=r"payload_bound: expected at least [\d,]+ \(what the core's own tables"):
        load_build(str(bad))


def test_the_ratio_bound_holds_for_adversarial_rows():
    rng = np.random.default_rng(0)
    n, eps = 48, 3
    bound = fx.ratio_bound(n, eps)
    worst = 0
    for m in range(1, 300):
        for k in (n - 1, n // 2):
            x = rng.integers(-m, m + 1, (64, n))
            x[:, 0] = m
            x[: m % 8, 1:] = 0  # rows with a single large value: the smallest RMS for their maximum
            _, ratio = fx.norm_quantize(x, k, 7, 0, eps)
            worst = max(worst, int(ratio.max()))
    assert worst <= bound < 2 * worst
