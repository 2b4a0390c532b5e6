"""Each format (model.pt, the build directory, the hardware config) is checked at the door: a
missing field, a wrong shape, a wrong dtype or a non-finite value is one line naming the field,
what was expected and what was found, exit code 2."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from sdllm.formats import model as modelformat
from sdllm.formats.hw import resolve

BIN = os.path.dirname(sys.executable)


def run(*args):
    return subprocess.run([os.path.join(BIN, args[0]), *args[1:]], capture_output=True, text=True, timeout=600)


def one_line(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    for n in needles:
        assert n in p.stderr, p.stderr


def _del(path):
    def edit(blob):
        d = blob
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return edit


def _set(path, value):
    def edit(blob):
        d = blob
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value(d[path[-1]]) if callable(value) else value
    return edit


MODEL_CASES = {
    "missing key": (_del(["eps_fx"]), "eps_fx: expected a value, found nothing (the field is missing)"),
    "missing layer tensor": (_del(["layers", 1, "o.scale_fx"]), "layers[1].o.scale_fx: expected a value, found nothing"),
    "wrong shape": (_set(["embed_fx"], lambda t: t[:, :-1]), "embed_fx: expected shape (256, 128), found [256, 127]"),
    "wrong dtype": (_set(["layers", 0, "down.weight"], lambda t: t.float()), "layers[0].down.weight: expected int8, found float32"),
    "NaN": (_set(["layers", 0, "gamma", "q"], math.nan), "layers[0].gamma.q: expected a finite number in (0, 1], found nan"),
    "bits out of range": (_set(["quant", "act_bits"], 40), "quant.act_bits: expected an integer in 2..8, found 40"),
    "negative weight bits": (_set(["quant", "weight_bits"], -4), "quant.weight_bits: expected an integer in 2..8, found -4"),
    "huge context": (_set(["config", "max_seq_len"], 10**9), "config.max_seq_len: expected an integer in 1..32,768, found 1,000,000,000"),
    "weights past their bits": (_set(["head", "weight"], lambda t: t * 3), "head.weight: expected values >= -7, found -21"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_a_bad_model_pt_is_one_line(default_model, tmp_path, case):
    edit, needle = MODEL_CASES[case]
    blob = default_model.to_blob()
    edit(blob)
    path = tmp_path / "model.pt"
    modelformat.save_blob(blob, str(path))
    one_line(run("sdllm-compile", str(path), "-o", str(tmp_path / "b")), f"{path}: {needle}")
    assert not (tmp_path / "b").exists()


def _edit_json(build, edit):
    doc = json.loads((build / "network.json").read_text())
    edit(doc)
    (build / "network.json").write_text(json.dumps(doc))


def _unit(doc):
    return next(c for c in doc["cores"] if c["type"] == "neuron_unit")


def _replace_array(build, core_pick, key, array):
    doc = json.loads((build / "network.json").read_text())
    np.save(build / _replace_target(doc, core_pick, key), array)


def _replace_target(doc, core_pick, key):
    return core_pick(doc)["arrays"][key]


BUILD_CASES = {
    "missing key": (lambda b: _edit_json(b, _del(["schedule", "period"])), "schedule.period: expected a value, found nothing"),
    "wrong shape": (lambda b: _replace_array(b, _unit, "v_range", np.ones(7, np.int16)), "v_range: expected shape (2, 32), found [7]"),
    "wrong dtype": (lambda b: _replace_array(b, _unit, "rope_cos", np.zeros((128, 16), np.float32)),
                    "rope_cos: expected signed integers, found float32"),
    "NaN": (lambda b: _edit_json(b, _set(["hw", "energy", "sop_pj"], math.nan)), "hw: energy.sop_pj: expected a finite number"),
    "route out of range": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[999, 0, 0, 1]], np.int16)),
                           "routes: expected destinations in 0..15 and lengths >= 1, found destination 999"),
    "path outside the build": (lambda b: _edit_json(b, _set(["cores", 1, "arrays", "v_range"], "../../etc/passwd")),
                               "cores[1].arrays.v_range: expected a file arrays/NAME.npy inside the build, found '../../etc/passwd'"),
    "zero period": (lambda b: _edit_json(b, _set(["schedule", "period"], 0)), "schedule.period: expected an integer in 1..16,777,216, found 0"),
    "negative axons": (lambda b: _edit_json(b, _set(["cores", 2, "n_axons"], -5)), "cores[2].n_axons: expected an integer in 0.."),
    "deep JSON": (lambda b: (b / "network.json").write_text("[" * 200_000 + "]" * 200_000), "nested deeper than JSON decoding allows"),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_a_bad_build_is_one_line(default_build, tmp_path, case):
    edit, needle = BUILD_CASES[case]
    build = tmp_path / "build"
    shutil.copytree(default_build, build)
    edit(build)
    one_line(run("sdllm-run", str(build), "--prompt", "ab", "--max-new-tokens", "1", "--backend", "fast"), needle)


def _hw(tmp_path, edit):
    with open(resolve("loihi2")) as f:
        raw = yaml.safe_load(f)
    edit(raw)
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


HW_CASES = {
    "missing key": (_del(["core", "max_neurons"]), "core.max_neurons: expected a value, found nothing"),
    "wrong shape": (_set(["chip", "mesh"], [128]), "chip.mesh: expected a list of 2, found a list of 1"),
    "wrong type": (_set(["core", "max_input_axons"], "many"), "core.max_input_axons: expected an integer in 1..1,048,576, found <str>"),
    "NaN": (_set(["energy", "hop_pj"], math.nan), "energy.hop_pj: expected a finite number in [0, 1e+09], found nan"),
    "zero neurons": (_set(["core", "max_neurons"], 0), "core.max_neurons: expected an integer in 1..1,048,576, found 0"),
    "negative timestep": (_set(["timing", "timestep_us"], -1.06), "timing.timestep_us: expected a finite number in (0, 1e+09], found -1.06"),
    "a billion chips": (_set(["system", "chips"], 10**9), "system.chips: expected an integer in 1..16,384, found 1,000,000,000"),
    "unknown field": (_set(["core", "max_nerons"], 5), "core.max_nerons: expected one of"),
}


@pytest.mark.parametrize("case", sorted(HW_CASES))
def test_a_bad_hardware_config_is_one_line(default_model_path, tmp_path, case):
    edit, needle = HW_CASES[case]
    one_line(run("sdllm-compile", default_model_path, "--target", _hw(tmp_path, edit), "-o", str(tmp_path / "b")), needle)
    assert not (tmp_path / "b").exists()


def test_yaml_aliases_are_refused(default_model_path, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                                                     f"*{chr(97 + i)}, *{chr(97 + i)}]" for i in range(9)]
    bomb.write_text("\n".join(lines) + "\nname: bomb\nbase: loihi2\n")
    one_line(run("sdllm-compile", default_model_path, "--target", str(bomb), "-o", str(tmp_path / "b")),
             "YAML aliases (*a) are not accepted")


def test_a_base_that_is_not_a_shipped_config_is_refused(default_model_path, tmp_path):
    cfg = tmp_path / "hw.yaml"
    cfg.write_text("name: x\nbase: /etc/passwd\n")
    one_line(run("sdllm-compile", default_model_path, "--target", str(cfg), "-o", str(tmp_path / "b")),
             "base: expected one of the shipped configs")


def test_a_model_pt_round_trips_through_its_typed_form(default_model, tmp_path):
    path = tmp_path / "m.pt"
    modelformat.save(default_model, str(path))
    again = modelformat.load(str(path))
    a, b = default_model.to_blob(), again.to_blob()
    assert a.keys() == b.keys() and a["config"] == b["config"] and a["quant"] == b["quant"]
    assert all(torch.equal(x, y) for x, y in zip(a["layers"][0].values(), b["layers"][0].values()) if torch.is_tensor(x))
