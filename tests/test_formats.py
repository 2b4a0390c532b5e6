"""Each format (model.pt, the build directory, the hardware config) is checked at the door: a
missing field, a wrong shape, a wrong dtype or a non-finite value is one line naming the field,
what was expected and what was found, exit code 2.

Each format's bad-input table lives in one place, tests/test_hostile.py (`MODEL_EDITS`,
`BUILD_CASES`, `HW_CASES`), where every case is refused in-process with nothing left behind;
here the installed commands refuse a case of each table as processes, as a user runs them."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from test_hostile import BUILD_CASES, HW_CASES, MODEL_EDITS

from sdllm.formats import model as modelformat

BIN = os.path.dirname(sys.executable)


def run(*args):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True, text=True, timeout=600)


def one_line(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


@pytest.mark.parametrize("case", ["missing key", "wrong dtype", "NaN gamma"])
def test_sdllm_compile_refuses_a_bad_model_pt_in_one_line(default_model, tmp_path, case):
    edit, needle = MODEL_EDITS[case]
    blob = default_model.to_blob()
    edit(blob)
    path = tmp_path / "model.pt"
    modelformat.save_blob(blob, str(path))
    one_line(run("sdllm-compile", str(path), "-o", str(tmp_path / "b")), f"{path}: {needle}")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("case", ["period missing", "array of floats", "relative array path leaving the build"])
def test_sdllm_run_refuses_a_bad_build_in_one_line(default_build, tmp_path, case):
    edit, needle = BUILD_CASES[case]
    build = tmp_path / "build"
    shutil.copytree(default_build, build)
    edit(build)
    one_line(run("sdllm-run", str(build), "--prompt", "ab", "--max-new-tokens", "1", "--backend", "fast"), needle)


@pytest.mark.parametrize("case", ["missing key", "billion laughs", "NaN energy"])
def test_sdllm_compile_refuses_a_bad_hardware_config_in_one_line(default_model_path, tmp_path, case):
    text, needle = HW_CASES[case]
    path = tmp_path / "hw.yaml"
    path.write_text(text())
    one_line(run("sdllm-compile", default_model_path, "--target", str(path), "-o", str(tmp_path / "b")), needle)
    assert not (tmp_path / "b").exists()


def test_a_model_pt_round_trips_through_its_typed_form(default_model, tmp_path):
    path = tmp_path / "m.pt"
    modelformat.save(default_model, str(path))
    again = modelformat.load(str(path))
    a, b = default_model.to_blob(), again.to_blob()
    assert a.keys() == b.keys() and a["config"] == b["config"] and a["quant"] == b["quant"]
    assert all(torch.equal(x, y) for x, y in zip(a["layers"][0].values(), b["layers"][0].values()) if torch.is_tensor(x))
