"""The standing bad-input suite: hostile model.pt files, hardware configs, build directories,
prompts, output paths and resource requests, and signals to running commands.

Every refusal is checked the same way (`Refusal.check`): exit code 2, one line on stderr naming
the problem and no traceback, nothing new in the temporary directory, nothing changed in the
test's directory (inputs, pre-existing outputs, a file the user keeps beside them) and no
process left. The commands run in this process where only their exit code and output matter
(fast), in their own process where signals and the process table do."""

import dataclasses
import importlib
import json
import math
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml
from helpers import default_signals, snapshot
from helpers import shared_memory as _shared_memory
from helpers import wait_for as _wait

from sdllm.formats import model as modelformat
from sdllm.formats.hw import resolve
from sdllm.runtime import lava_backend, lava_lifetime  # Lava fixes the start method: before anything uses it

BIN = os.path.dirname(sys.executable)
TOOLS = {"sdllm-compile": "sdllm.cli.compile", "sdllm-convert": "sdllm.cli.convert", "sdllm-run": "sdllm.cli.run",
         "sdllm-eval": "sdllm.cli.eval"}


def child_pids() -> set:
    me = str(os.getpid())
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.add(pid)
        except OSError:
            pass
    return out


def one_line(code: int, err: str, expected_code: int = 2):
    assert code == expected_code, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.endswith("\n"), err


class Refusal:
    """A world (tmp_path/world: inputs, outputs, the user's files) and a private TMPDIR."""

    def __init__(self, tmp_path, monkeypatch, capfd):
        self.world, self.tmp = tmp_path / "world", tmp_path / "tmp"
        self.world.mkdir()
        self.tmp.mkdir()
        monkeypatch.setenv("TMPDIR", str(self.tmp))
        monkeypatch.setattr("tempfile.tempdir", str(self.tmp))
        (self.world / "keep.txt").write_text("a file of the user's, beside everything\n")
        self.capfd = capfd

    def check(self, tool: str, *args, needle: str):
        """Run the command in this process: it must refuse in one line and leave everything as it was."""
        before, children = snapshot(self.world), child_pids()
        self.capfd.readouterr()
        code = importlib.import_module(TOOLS[tool]).main([str(a) for a in args])
        _, err = self.capfd.readouterr()
        one_line(code, err)
        assert needle in err, err
        assert snapshot(self.world) == before
        assert os.listdir(self.tmp) == []
        assert child_pids() <= children
        return err


@pytest.fixture
def refusal(tmp_path, monkeypatch, capfd):
    return Refusal(tmp_path, monkeypatch, capfd)


# model.pt ---------------------------------------------------------------------------------------

def _at(blob, path):
    for k in path[:-1]:
        blob = blob[k]
    return blob


def _del(*path):
    return lambda blob: _at(blob, path).__delitem__(path[-1])


def _set(*path, value):
    def edit(blob):
        d = _at(blob, path)
        d[path[-1]] = value(d[path[-1]]) if callable(value) else value
    return edit


MODEL_EDITS = {
    "missing key": (_del("eps_fx"), "eps_fx: expected a value, found nothing (the field is missing)"),
    "missing layer tensor": (_del("layers", 1, "o.scale_fx"), "layers[1].o.scale_fx: expected a value, found nothing"),
    "wrong shape": (_set("embed_fx", value=lambda t: t[:, :-1]), "embed_fx: expected shape (256, 128), found [256, 127]"),
    "wrong dtype": (_set("layers", 0, "down.weight", value=lambda t: t.float()), "layers[0].down.weight: expected int8, found float32"),
    "NaN gamma": (_set("layers", 0, "gamma", "q", value=math.nan), "layers[0].gamma.q: expected a finite number in (0, 1], found nan"),
    "inf gamma": (_set("head", "gamma", value=math.inf), "head.gamma: expected a finite number in (0, 1], found inf"),
    "zero gamma": (_set("head", "gamma", value=0.0), "head.gamma: expected a finite number in (0, 1], found 0"),
    "act_bits 0": (_set("quant", "act_bits", value=0), "quant.act_bits: expected an integer in 2..8, found 0"),
    "act_bits 40": (_set("quant", "act_bits", value=40), "quant.act_bits: expected an integer in 2..8, found 40"),
    "weight_bits -4": (_set("quant", "weight_bits", value=-4), "quant.weight_bits: expected an integer in 2..8, found -4"),
    "max_seq_len 1e9": (_set("config", "max_seq_len", value=10**9), "config.max_seq_len: expected an integer in 1..32,768, found 1,000,000,000"),
    "dim not a multiple of the heads": (_set("config", "n_heads", value=3), "config.dim: expected a multiple of n_heads 3"),
    "kv heads not dividing the heads": (_set("config", "n_kv_heads", value=3), "config.n_heads: expected a multiple of n_kv_heads 3"),
    "too few layers": (_set("layers", value=lambda layers: layers[:1]), "layers: expected a list of 2, found a list of 1"),
    "weights past their bits": (_set("head", "weight", value=lambda t: t * 3), "head.weight: expected values >= -7, found -21"),
    "negative scale": (_set("head", "scale_fx", value=lambda t: -t - 1), "head.scale_fx: expected values >= 0"),
    "a string for a tensor": (_set("embed_fx", value="zeros"), "embed_fx: expected an array of shape (256, 128), found <str>"),
    "config not a mapping": (_set("config", value=[1, 2]), "config: expected a mapping, found <list>"),
    "format version 99": (_set("format_version", value=99), "format_version 99 is not supported"),
    "unknown tokenizer": (_set("tokenizer", "type", value="sentencepiece"), "tokenizer.type: expected one of"),
    "dead zone past the spikes": (_set("quant", "theta", value=7), "quant: --theta: must be within 0..6 for the 4-bit point qkv, got 7"),
    "a bool for an int": (_set("config", "n_layers", value=True), "config.n_layers: expected an integer"),
    "a float for an int": (_set("config", "dim", value=128.0), "config.dim: expected an integer in 1..65,536, found 128"),
    "eps past the fixed-point range": (_set("eps_fx", value=1 << 50), "eps_fx: expected an integer in 0..1,099,511,627,776"),
    "synthetic seed a string": (_set("synthetic", value={"seed": "x"}), "synthetic.seed: expected an integer"),
    "channel scales missing": (_del("balance"), "balance: expected channel scales exactly when quant.balance > 0"),
    "channel scales without balancing": (_set("quant", "balance", value=0.0),
                                         "balance: expected channel scales exactly when quant.balance > 0"),
    "a zero channel scale": (_set("balance", "down", value=lambda t: t * 0), "balance.down: expected values >= 0.0009765625"),
    "channel scales of another shape": (_set("balance", "values", value=lambda t: t[:, :-1]),
                                        "balance.values: expected shape (2, 64), found [2, 63]"),
    "balance exponent past 1": (_set("quant", "balance", value=2.0), "quant.balance: expected a finite number in [0, 1]"),
    "calibration not a string": (_set("calibration", value=3), "calibration: expected a string, found <int>"),
    "calibration too long": (_set("calibration", value="x" * 1001),
                             "calibration: expected a string of at most 1,000 characters, found 1,001"),
}


@pytest.mark.parametrize("case", sorted(MODEL_EDITS))
def test_a_hostile_model_pt_is_refused(default_model, refusal, case):
    edit, needle = MODEL_EDITS[case]
    blob = default_model.to_blob()
    edit(blob)
    path = refusal.world / "model.pt"
    modelformat.save_blob(blob, str(path))
    refusal.check("sdllm-compile", path, "-o", refusal.world / "build", needle=f"{path}: {needle}")


class _Code:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


MODEL_FILES = {
    "truncated": (lambda good: good[: len(good) // 2], "truncated or corrupt"),
    "empty": (lambda good: b"", "truncated or corrupt"),
    "not an archive": (lambda good: os.urandom(4096), "not a readable checkpoint"),
    "a plain pickle": (lambda good: pickle.dumps({"format": "sdllm"}), "not a readable checkpoint"),
    "a list, not a dict": (lambda good: _saved([1, 2, 3]), "expected format 'sdllm', found 'list'"),
}


def _saved(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(MODEL_FILES))
def test_a_damaged_model_pt_is_refused(default_model_path, refusal, case):
    make, needle = MODEL_FILES[case]
    path = refusal.world / "model.pt"
    with open(default_model_path, "rb") as f:
        path.write_bytes(make(f.read()))
    refusal.check("sdllm-compile", path, "-o", refusal.world / "build", needle=needle)


def test_a_model_pt_with_code_is_refused_and_the_code_never_runs(refusal):
    path = refusal.world / "model.pt"
    path.write_bytes(_saved({"format": "sdllm", "format_version": 1, "x": _Code(refusal.world / "ran")}))
    refusal.check("sdllm-compile", path, "-o", refusal.world / "build", needle="refused to load: it references code (posix.system)")


def test_a_model_pt_bigger_than_the_memory_is_refused_before_reading(refusal):
    path = refusal.world / "model.pt"
    with open(path, "wb") as f:
        f.truncate(1 << 43)  # sparse: no disk used
    refusal.check("sdllm-compile", path, "-o", refusal.world / "build", needle="needs at least 8.0 TiB of memory")


def test_a_missing_model_pt_and_a_directory_are_refused(refusal):
    refusal.check("sdllm-compile", refusal.world / "nope.pt", "-o", refusal.world / "build", needle="nope.pt: no such file")
    (refusal.world / "dir.pt").mkdir()
    refusal.check("sdllm-compile", refusal.world / "dir.pt", "-o", refusal.world / "build", needle="dir.pt: is a directory, not a file")


# float checkpoints to convert -------------------------------------------------------------------

HF_CONFIG = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64}

SOURCES = {
    "config.json not JSON": (b"{not json", "config.json: not valid JSON"),
    "config.json not UTF-8": (b'{"a": "\xff"}', "config.json: not UTF-8 text (byte 7"),
    "config.json nested 100k deep": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than JSON decoding allows"),
    "config.json a list": (b"[1]", "config.json: expected a JSON object, found list"),
    "a string for a size": ({"hidden_size": "big"}, "config.dim: expected an integer in 1..65,536, found <str>"),
    "a string for the context": ({"max_position_embeddings": "long"}, "config.json:"),
    "dim 1,000,000": ({"hidden_size": 1_000_000, "num_attention_heads": 1000}, "config.dim: expected an integer in 1..65,536"),
    "an embedding of 512 GiB": ({"vocab_size": 1 << 20, "hidden_size": 65536, "num_attention_heads": 256, "num_key_value_heads": 256},
                                "of memory, this machine has"),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_a_hostile_checkpoint_to_convert_is_refused(refusal, case):
    from safetensors.torch import save_file

    config, needle = SOURCES[case]
    src = refusal.world / "hf"
    src.mkdir()
    (src / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps({**HF_CONFIG, **config}).encode())
    save_file({}, str(src / "model.safetensors"))
    refusal.check("sdllm-convert", src, "-o", refusal.world / "m.pt", needle=needle)


# hardware configs -------------------------------------------------------------------------------

def _hw_edit(edit):
    def text():
        with open(resolve("loihi2")) as f:
            raw = yaml.safe_load(f)
        edit(raw)
        return yaml.safe_dump(raw)
    return text


def _bomb():
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(9)]
    return "\n".join(lines) + "\nname: bomb\nbase: loihi2\n"


HW_CASES = {
    "billion laughs": (_bomb, "YAML aliases (*a) are not accepted"),
    "deep nesting": (lambda: "name: x\ncore: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 32 levels"),
    "base is a system file": (lambda: "name: x\nbase: /etc/passwd\n", "base: expected one of the shipped configs"),
    "base is a list": (lambda: "name: x\nbase: [loihi2]\n", "base: expected one of the shipped configs"),
    "not YAML": (lambda: "\x00\x01 {{{ ::: ]]]\n", "not a valid hardware config"),
    "a YAML list": (lambda: "- 1\n- 2\n", "not a valid hardware config (expected a mapping, found list)"),
    "empty": (lambda: "", "not a valid hardware config (expected a mapping, found NoneType)"),
    "over a megabyte": (lambda: "# " + "x" * (1 << 20) + "\n", "at most 1,048,576 are read"),
    "missing key": (_hw_edit(_del("core", "max_neurons")), "core.max_neurons: expected a value, found nothing"),
    "zero neurons": (_hw_edit(_set("core", "max_neurons", value=0)), "core.max_neurons: expected an integer in 1..1,048,576, found 0"),
    "zero axons": (_hw_edit(_set("core", "max_input_axons", value=0)), "core.max_input_axons: expected an integer in 1..1,048,576, found 0"),
    "zero memory": (_hw_edit(_set("core", "synapse_memory_bits", value=0)), "core.synapse_memory_bits: expected an integer in 1.."),
    "a 1-D mesh": (_hw_edit(_set("chip", "mesh", value=[128])), "chip.mesh: expected a list of 2, found a list of 1"),
    "a mesh too small": (_hw_edit(_set("chip", "mesh", value=[2, 2])), "chip.mesh: expected room for cores_per_chip 128, found 2 x 2"),
    "NaN energy": (_hw_edit(_set("energy", "hop_pj", value=math.nan)), "energy.hop_pj: expected a finite number in [0, 1e+09], found nan"),
    "inf energy": (_hw_edit(_set("energy", "sop_pj", value=math.inf)), "energy.sop_pj: expected a finite number in [0, 1e+09], found inf"),
    "negative energy": (_hw_edit(_set("energy", "sop_pj", value=-1.0)), "energy.sop_pj: expected a finite number in [0, 1e+09], found -1"),
    "negative timestep": (_hw_edit(_set("timing", "timestep_us", value=-1.06)), "timing.timestep_us: expected a finite number in (0, 1e+09], found -1.06"),
    "a billion chips": (_hw_edit(_set("system", "chips", value=10**9)), "system.chips: expected an integer in 1..16,384, found 1,000,000,000"),
    "1e12 cores per chip": (_hw_edit(_set("chip", "cores_per_chip", value=10**12)), "chip.cores_per_chip: expected an integer in 1..4,096"),
    "chips x cores past placement's memory": (_hw_edit(lambda raw: (raw["system"].update(chips=16384, topology=[128, 128, 1]),
                                                                    raw["chip"].update(cores_per_chip=4096, mesh=[64, 64]))),
                                               "system: expected at most 1,048,576 cores in all, found 16,384 chips x 4,096 cores"),
    "topology not the chips": (_hw_edit(_set("system", "topology", value=[2, 2, 2])), "system.topology: expected 3 positive sizes whose product"),
    "unknown section": (_hw_edit(_set("extras", value={})), "extras: expected one of the sections"),
    "unknown field": (_hw_edit(_set("core", "max_nerons", value=5)), "core.max_nerons: expected one of"),
    "a string for an int": (_hw_edit(_set("core", "max_input_axons", value="many")), "core.max_input_axons: expected an integer in 1..1,048,576, found <str>"),
    "a bool for an int": (_hw_edit(_set("system", "chips", value=True)), "system.chips: expected an integer in 1..16,384, found <bool>"),
    "format version 2": (_hw_edit(_set("format_version", value=2)), "format_version: expected 1, found 2"),
}


@pytest.mark.parametrize("case", sorted(HW_CASES))
def test_a_hostile_hardware_config_is_refused(default_model_path, refusal, case):
    text, needle = HW_CASES[case]
    path = refusal.world / "hw.yaml"
    path.write_text(text())
    refusal.check("sdllm-compile", default_model_path, "--target", path, "-o", refusal.world / "build", needle=needle)


def test_a_config_whose_base_names_itself_is_refused(default_model_path, refusal):
    path = refusal.world / "kapoho_point.yaml"
    path.write_text("name: mine\nbase: kapoho_point\nsystem: {chips: 2}\n")
    refusal.check("sdllm-compile", default_model_path, "--target", path, "-o", refusal.world / "build",
                  needle="base: configs name each other in a cycle (kapoho_point -> kapoho_point)")


def test_an_unknown_target_is_refused(default_model_path, refusal):
    refusal.check("sdllm-compile", default_model_path, "--target", "loihi9", "-o", refusal.world / "build",
                  needle="--target 'loihi9': no such hardware config")


# build directories ------------------------------------------------------------------------------

def _json(edit):
    def apply(build):
        doc = json.loads((build / "network.json").read_text())
        edit(doc)
        (build / "network.json").write_text(json.dumps(doc))
    return apply


def _unit(doc):
    return next(c for c in doc["cores"] if c["type"] == "neuron_unit")


def _replace_array(pick, key, array):
    def apply(build):
        doc = json.loads((build / "network.json").read_text())
        np.save(build / pick(doc)["arrays"][key], array)
    return apply


def _write(name, data):
    return lambda build: (build / name).write_bytes(data)


def _npy_claiming(n):
    from numpy.lib import format as npformat

    def apply(build):
        with open(build / "arrays/c00000.routes.npy", "wb") as f:
            npformat.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (n, 4)})
            f.write(b"\0" * 64)
    return apply


def _edit_route(build, core, row, column, value):
    table = np.load(build / f"arrays/{core}.routes.npy").astype(np.int64)
    table[row, column] = value
    np.save(build / f"arrays/{core}.routes.npy", table)


def _outside_link(build):
    (build / "arrays/c00000.routes.npy").unlink()
    (build / "arrays/c00000.routes.npy").symlink_to("/etc/hostname")


def _arrays_link(build):
    shutil.move(build / "arrays", build.parent / "elsewhere")
    (build / "arrays").symlink_to(build.parent / "elsewhere")


def _first_synapse(doc):
    return next(c for c in doc["cores"] if c["type"] == "synapse")


BUILD_CASES = {
    "network.json missing": (lambda b: (b / "network.json").unlink(), "not a build directory (no network.json)"),
    "network.json not JSON": (_write("network.json", b"{not json"), "network.json: unreadable"),
    "network.json not UTF-8": (_write("network.json", b'{"a": "\xff\xfe"}'), "network.json: unreadable"),
    "200k-deep JSON": (_write("network.json", b"[" * 200_000 + b"]" * 200_000), "nested deeper than JSON decoding allows"),
    "a JSON list": (_write("network.json", b"[1, 2]"), "network.json: document: expected a JSON object, found list"),
    "format version 99": (_json(_set("format_version", value=99)), "is not supported (this sdllm reads sdllm-build version 5)"),
    "period missing": (_json(_del("schedule", "period")), "schedule.period: expected a value, found nothing"),
    "period 0": (_json(_set("schedule", "period", value=0)), "schedule.period: expected an integer in 1..16,777,216, found 0"),
    "interval below the widest span": (_json(_set("schedule", "interval", value=1)),
                                       "schedule.interval: expected at least "),
    "interval missing": (_json(_del("schedule", "interval")), "schedule.interval: expected a value, found nothing"),
    "phase past the period": (_json(_set("schedule", "host", "embed_arrives", value=10**6)), "schedule.host.embed_arrives: expected an integer in 0.."),
    "route to a core that does not exist": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[999, 0, 0, 1]], np.int16)),
                                            "routes: expected destinations in 0..15 and lengths >= 1, found destination 999"),
    "route of length 0": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[1, 0, 0, 0]], np.int16)), "lengths >= 1, found destination 1, length 0"),
    "route from outputs a core lacks": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[1, 10**6, 0, 1]], np.int32)),
                                        "expected source outputs within its"),
    "route past the destination's axons": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[1, 0, 10**6, 1]], np.int32)),
                                           "axons of core 1 within its"),
    "negative route fields": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([[1, -5, 0, 1]], np.int16)), "routes: expected values >= 0, found -5"),
    "routes of the wrong shape": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.zeros((2, 3), np.int16)), "routes: expected shape (any, 4), found [2, 3]"),
    "a core with no routes": (lambda b: np.save(b / "arrays/c00002.routes.npy", np.zeros((0, 4), np.int8)),
                              "routes: expected a routing table (every core sends its outputs on), found none"),
    "routes that narrow a stage": (lambda b: np.save(b / "arrays/c00002.routes.npy", np.array([[1, 0, 128, 127]], np.int16)),
                                   "build: stage L0.qkv: its routes carry 128 inputs to 127 outputs, the stage has (128, 256)"),
    "KV spikes from outside the stage": (lambda b: _edit_route(b, "c00001", 5, 1, 0), "build: core L0.qk"),
    "a list for an edge's node": (_json(_set("edges", 3, 1, value=["L0.unit"])), "edges[3]: expected [source node"),
    "a string for weight bits": (_json(lambda d: _first_synapse(d)["params"].update(weight_bits="")),
                                 "params.weight_bits: expected an integer in 2..8, found "),
    "negative axon count": (_json(_set("cores", 2, "n_axons", value=-5)), "cores[2].n_axons: expected an integer in 0.."),
    "axon count past the limit": (_json(_set("cores", 2, "n_axons", value=10**12)), "cores[2].n_axons: expected an integer in 0..67,108,864"),
    "array of the wrong shape": (_replace_array(_unit, "v_range", np.ones(7, np.int16)), "v_range: expected shape (2, 32), found [7]"),
    "array of unsigned 64-bit integers": (_replace_array(_unit, "v_range", np.full((2, 32), 2**64 - 1, np.uint64)),
                                          "v_range: expected signed integers, found uint64"),
    "array of floats": (_replace_array(_unit, "rope_cos", np.zeros((128, 16), np.float32)), "rope_cos: expected signed integers, found float32"),
    "weights past their bits": (_replace_array(_first_synapse, "weight_nibbles", np.full(100, 127, np.int8)), "weight_nibbles: expected shape"),
    "absolute array path": (_json(_set("cores", 1, "arrays", "v_range", value="/etc/passwd")), "expected a file arrays/NAME.npy inside the build, found '/etc/passwd'"),
    "relative array path leaving the build": (_json(_set("cores", 1, "arrays", "v_range", value="../../etc/passwd")),
                                              "cores[1].arrays.v_range: expected a file arrays/NAME.npy inside the build, "
                                              "found '../../etc/passwd'"),
    "array path with ..": (_json(_set("cores", 1, "arrays", "v_range", value="arrays/../../etc/passwd.npy")), "expected a file arrays/NAME.npy inside the build"),
    "array linked outside": (_outside_link, "expected an existing file inside the build (not a link)"),
    "arrays folder linked outside": (_arrays_link, "expected an existing file inside the build (not a link)"),
    "a folder for an array": (lambda b: ((b / "arrays/c00000.routes.npy").unlink(), (b / "arrays/c00000.routes.npy").mkdir()), "expected an existing file inside"),
    "truncated array": (lambda b: (b / "arrays/c00000.routes.npy").write_bytes((b / "arrays/c00000.routes.npy").read_bytes()[:100]),
                        "expected a readable .npy array"),
    "array header claiming 745 GiB": (_npy_claiming(25 * 10**9), "expected a readable .npy array, found ValueError: mmap length is greater than file size"),
    "pickled array": (lambda b: np.save(b / "arrays/c00000.routes.npy", np.array([{"x": 1}], dtype=object)), "expected a readable .npy array"),
    "huge index range": (_json(lambda d: _unit(d)["arrays"].update(axons=[0, 1 << 26])), "axons: expected shape"),
    "range past the limit": (_json(lambda d: _unit(d)["arrays"].update(axons=[0, 1 << 40])), "expected [start, stop] within 0..67,108,864"),
    "range backwards": (_json(lambda d: _unit(d)["arrays"].update(axons=[5, 2])), "expected [start, stop] within 0..67,108,864, found [5, 2]"),
    "NaN energy": (_json(_set("hw", "energy", "sop_pj", value=math.nan)), "hw: energy.sop_pj: expected a finite number"),
    "unknown core type": (_json(_set("cores", 3, "type", value="gpu")), "cores[3].type: expected one of"),
    "two hosts": (_json(_set("cores", 3, "type", value="host_io")), "cores[3]"),
    "core ids out of order": (_json(_set("cores", 3, "id", value=7)), "cores[3].id: expected 3 (its position in the list), found 7"),
    "edge to an unknown node": (_json(lambda d: d["edges"].append(["L0.unit", "nowhere", "x", "y", 1])), "edges[33]: expected [source node"),
    "chip past the system": (_json(_set("cores", 3, "chip", value=5)), "cores[3].chip: expected an integer in 0..0, found 5"),
    "malformed tokenizer": (_json(_set("tokenizer", value={"type": "hf-tokenizers", "json": "{not json"})), "tokenizer: not a valid tokenizer.json"),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_a_hostile_build_is_refused(default_build, refusal, case):
    edit, needle = BUILD_CASES[case]
    build = refusal.world / "build"
    shutil.copytree(default_build, build)
    edit(build)
    refusal.check("sdllm-run", build, "--prompt", "ab", "--max-new-tokens", "1", "--backend", "fast", needle=needle)


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _leaves(v, (*path, i))
    if path:
        yield path


ODD_VALUES = [None, True, -1, 0, 1, 2**31, 2**63, 1.5, math.nan, "x", "", [], {}, [0, 1], [1, 0], [[]], "arrays/c00000.routes.npy"]


def _damage(build, rng) -> None:
    """One or two random edits: a JSON value replaced by an odd one, or an array's element, length or dtype changed."""
    for _ in range(rng.choice([1, 2])):
        if rng.random() < 0.5:
            doc = json.loads((build / "network.json").read_text())
            path = rng.choice(list(_leaves(doc)))
            _at(doc, path)[path[-1]] = rng.choice(ODD_VALUES)
            (build / "network.json").write_text(json.dumps(doc))
        else:
            f = rng.choice(sorted((build / "arrays").iterdir()))
            a = np.load(f).astype(np.int64)
            kind = rng.randrange(4)
            if kind == 0 and a.size:
                a.flat[rng.randrange(a.size)] = rng.choice([-1, 0, 7, 127, -128, 2**15, 2**40, -(2**62)])
            elif kind == 1:
                a = a.reshape(-1)[: max(a.size - 1, 0)]
            elif kind == 2:
                a = np.concatenate([a.reshape(-1), a.reshape(-1)[:3]])
            else:
                a = np.zeros((0, *a.shape[1:]), np.int64)
            np.save(f, a)


def test_a_build_with_random_damage_is_refused_or_runs(default_build, tmp_path):
    """Seeded random damage to a build: reading and running it (fast and lockstep) either works or
    ends in an SdllmError, never in another exception."""
    from sdllm.errors import SdllmError
    from sdllm.formats.build import read
    from sdllm.runtime.backends import run

    rng = random.Random(12)
    refused = 0
    for i in range(60):
        build = tmp_path / f"b{i}"
        shutil.copytree(default_build, build)
        _damage(build, rng)
        try:
            run(read(str(build)), [1, 2], 2, "fast" if i % 2 else "lockstep")
        except SdllmError:
            refused += 1
        shutil.rmtree(build)
    assert refused > 30


def test_random_bytes_as_a_model_pt_are_refused(tmp_path):
    from sdllm.errors import SdllmError

    path = tmp_path / "m.pt"
    rng = random.Random(3)
    for size in [0, 1, 2, 3, 8, 64, 4096] * 40:
        path.write_bytes(rng.randbytes(size))
        with pytest.raises(SdllmError):
            modelformat.load(str(path))


def test_a_build_past_the_memory_available_is_refused(default_build, refusal, monkeypatch):
    monkeypatch.setattr("sdllm.resources.available_memory", lambda: 100_000)
    refusal.check("sdllm-run", default_build, "--prompt", "ab", "--backend", "fast",
                  needle="expected a build that fits the 100,000 bytes of memory available")


# prompts and run requests -----------------------------------------------------------------------

PROMPTS = {
    "invalid UTF-8 byte": (["--prompt", "ab\udcffcd"], "prompt: not valid UTF-8 text (byte 0xff at character 2)"),
    "overlong encoding": (["--prompt", "\udcc0\udc80"], "prompt: not valid UTF-8 text (byte 0xc0 at character 0)"),
    "encoded surrogate": (["--prompt", "x\udced\udca0\udc80"], "prompt: not valid UTF-8 text (byte 0xed at character 1)"),
    "empty prompt": (["--prompt", ""], "--prompt: must not be empty"),
    "longer than the context": (["--prompt", "x" * 130, "--max-new-tokens", "1"], "need 130 positions, the context holds 128"),
    "no new tokens": (["--prompt", "ab", "--max-new-tokens", "0"], "--max-new-tokens: must be at least 1, got 0"),
    "negative new tokens": (["--prompt", "ab", "--max-new-tokens", "-5"], "--max-new-tokens: must be at least 1, got -5"),
    "a billion new tokens": (["--prompt", "ab", "--max-new-tokens", str(10**9)], "need 1000000001 positions, the context holds 128"),
}


@pytest.mark.parametrize("case", sorted(PROMPTS))
@pytest.mark.parametrize("backend", ["fast", "lava"])
def test_a_hostile_prompt_is_refused(default_build, refusal, case, backend):
    args, needle = PROMPTS[case]
    refusal.check("sdllm-run", default_build, *args, "--backend", backend, needle=needle)


def test_a_prompt_of_invalid_utf8_bytes_on_the_command_line_is_one_line(default_build):
    p = subprocess.run([os.path.join(BIN, "sdllm-run").encode(), default_build.encode(), b"--prompt", b"The \xff\xfe if",
                        b"--backend", b"fast"], capture_output=True, timeout=600)
    err = p.stderr.decode()
    one_line(p.returncode, err)
    assert "prompt: not valid UTF-8 text (byte 0xff at character 4)" in err


# outputs ----------------------------------------------------------------------------------------

@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot create files in (for root, which ignores modes: immutable)."""
    d = tmp_path / "world" / "ro"
    d.mkdir(parents=True)
    d.chmod(0o555)
    immutable = False
    if os.access(d, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a directory read-only for this user")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    d.chmod(0o755)


def test_compile_into_a_missing_directory_is_refused_before_any_work(default_model_path, refusal):
    refusal.check("sdllm-compile", default_model_path, "-o", refusal.world / "no" / "build",
                  needle=f"-o {refusal.world / 'no' / 'build'}: cannot write: directory {refusal.world / 'no'} does not exist")


def test_compile_into_a_read_only_directory_is_refused(default_model_path, refusal, read_only_dir):
    refusal.check("sdllm-compile", default_model_path, "-o", read_only_dir / "build", needle=f"directory {read_only_dir} is read-only")


def test_compile_onto_a_file_is_refused(default_model_path, refusal):
    (refusal.world / "build").write_text("mine")
    refusal.check("sdllm-compile", default_model_path, "-o", refusal.world / "build", needle="exists and is not a directory")


def test_compile_onto_a_directory_of_other_files_is_refused(default_model_path, refusal):
    (refusal.world / "photos").mkdir()
    (refusal.world / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    refusal.check("sdllm-compile", default_model_path, "-o", refusal.world / "photos", needle="is not an sdllm build directory")


@pytest.mark.parametrize("where", ["notes.txt", "arrays/mine.npy", "arrays/sub/"])
def test_compile_onto_a_build_holding_a_users_file_is_refused(default_model_path, default_build, refusal, where):
    build = refusal.world / "build"
    shutil.copytree(default_build, build)
    if where.endswith("/"):
        (build / where).mkdir()
    else:
        (build / where).write_text("the user's")
    refusal.check("sdllm-compile", default_model_path, "-o", build,
                  needle=f"holds files a build does not ({where.rstrip('/')}); refusing to replace it")


def test_convert_into_a_missing_directory_is_refused_before_any_work(refusal):
    refusal.check("sdllm-convert", "-o", refusal.world / "no" / "m.pt", needle="cannot write: directory")


def test_convert_into_a_read_only_directory_is_refused(refusal, read_only_dir):
    refusal.check("sdllm-convert", "-o", read_only_dir / "m.pt", needle=f"directory {read_only_dir} is read-only")


def test_convert_onto_a_directory_is_refused(refusal):
    (refusal.world / "m.pt").mkdir()
    refusal.check("sdllm-convert", "-o", refusal.world / "m.pt", needle="cannot write: it is a directory")


def test_a_rotation_from_a_missing_file_a_model_without_one_or_for_another_model_is_refused(refusal, tiny_model,
                                                                                         default_model_path):
    out = refusal.world / "m.pt"
    refusal.check("sdllm-convert", "-o", out, "--rotation-from", refusal.world / "none.pt",
                  needle=f"--rotation-from: {refusal.world / 'none.pt'}: no such file")
    refusal.check("sdllm-convert", "-o", out, "--rotation", "hadamard", "--rotation-from", default_model_path,
                  needle="--rotation-from: gives a learned rotation, but rotation is 'hadamard'")
    refusal.check("sdllm-convert", "-o", out, "--no-rotate", "--rotation-from", default_model_path,
                  needle="--rotation-from: gives a learned rotation, but --no-rotate asks for none")
    plain = refusal.world / "plain.pt"
    modelformat.save(dataclasses.replace(tiny_model, quant=dataclasses.replace(tiny_model.quant, rotation="hadamard"),
                                         rotation=None), plain)
    refusal.check("sdllm-convert", "-o", out, "--rotation-from", plain, needle="holds no learned rotation")
    other = refusal.world / "other.pt"
    modelformat.save(dataclasses.replace(tiny_model, quant=dataclasses.replace(tiny_model.quant, rotation="learned"),
                                         rotation={"residual": np.eye(32), "heads": np.stack([np.eye(8)] * 2)}), other)
    refusal.check("sdllm-convert", "-o", out, "--rotation-from", other,
                  needle="convert: the given rotation's 'residual' must be (128, 128) for this model, got (32, 32)")


def test_eval_plot_into_a_missing_or_read_only_directory_is_refused_before_the_evaluation(default_model_path, refusal, read_only_dir):
    refusal.check("sdllm-eval", default_model_path, "--plot", refusal.world / "no" / "p.png", needle="--plot")
    refusal.check("sdllm-eval", default_model_path, "--plot", read_only_dir / "p.png", needle="is read-only")
    (refusal.world / "p.png").mkdir()
    refusal.check("sdllm-eval", default_model_path, "--plot", refusal.world / "p.png", needle="it is a directory")


def test_a_run_report_into_a_missing_directory_onto_a_file_or_of_a_prompt_loop_is_refused_before_the_run(default_build,
                                                                                                        refusal):
    run = ("sdllm-run", default_build, "--prompt", "The if", "--backend", "fast", "--report")
    missing = refusal.world / "no" / "report"
    refusal.check(*run, missing, needle=f"--report {missing}: cannot write: directory {missing.parent} does not exist")
    refusal.check(*run, refusal.world / "keep.txt", needle="cannot write: it exists and is not a directory")
    refusal.check("sdllm-run", default_build, "--interactive", "--report", refusal.world / "r",
                  needle="--report: writes the report of one --prompt run, not of --interactive")


def test_a_negative_dead_zone_or_calibration_window_count_is_refused(default_model_path, refusal):
    refusal.check("sdllm-convert", "-o", refusal.world / "m.pt", "--theta", "-1", needle="--theta: must be within 0..6")
    refusal.check("sdllm-eval", default_model_path, "--ablation", "--calib-windows", "0",
                  needle="--calib-windows: must be at least 1, got 0")


def test_a_build_too_big_for_the_disk_is_refused_before_writing(tmp_path):
    from sdllm.errors import SdllmError
    from sdllm.formats.build import BuildWriter

    with pytest.raises(SdllmError, match="needs at least 1,024.0 TiB of disk"):
        BuildWriter(str(tmp_path / "b"), expected_bytes=1 << 50)
    assert os.listdir(tmp_path) == []


# resource requests ------------------------------------------------------------------------------

SHAPES = {
    "dim 1,000,000": ("dim: 1000000\n", "dim: expected an integer in 1..65,536, found 1,000,000"),
    "an embedding of 512 GiB": ("vocab_size: 1048576\ndim: 65536\nn_heads: 256\nn_kv_heads: 256\n", "of memory, this machine has"),
    "a KV cache of 512 GiB": ("dim: 1024\nn_heads: 16\nn_kv_heads: 16\nn_layers: 1024\nmax_seq_len: 32768\n", "one head's KV cache needs 16779264 synapse bits"),  # the compile holds no KV cache: the tiler refuses it
    "huge context": ("max_seq_len: 1000000000\n", "max_seq_len: expected an integer in 1..32,768"),
    "billion laughs": ("a: &a [1, 1, 1, 1]\nb: &b [*a, *a, *a, *a]\n", "YAML aliases (*a) are not accepted"),
    "not YAML": ("{{{: ]]\n", "not YAML or JSON"),
    "unknown field": ("dimension: 64\n", "unknown field(s) dimension"),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
def test_a_hostile_synthetic_shape_is_refused_before_allocating(refusal, case):
    text, needle = SHAPES[case]
    shape = refusal.world / "shape.yaml"
    shape.write_text(text)
    refusal.check("sdllm-compile", "--synthetic", shape, "-o", refusal.world / "build", needle=needle)


# atomic, polite output --------------------------------------------------------------------------

def test_a_build_replaces_the_one_there_and_leaves_nothing_beside_it(default_model, default_build, tmp_path):
    from sdllm.compiler.emit import emit
    from sdllm.compiler.pipeline import compile_model

    out = tmp_path / "build"
    shutil.copytree(default_build, out)
    (out / "network.json").write_text("{}")  # stale: must be replaced
    emit(compile_model(default_model, "loihi2"), str(out))
    assert snapshot(out, times=False) == snapshot(default_build, times=False)
    assert sorted(os.listdir(tmp_path)) == ["build"]


def test_replacing_a_build_never_leaves_the_target_missing(default_model, default_build, tmp_path, monkeypatch):
    """One atomic exchange, not two renames with no build in between (where a concurrent compile
    found 'Directory not empty' and a reader found nothing)."""
    import errno

    from sdllm import outputs
    from sdllm.compiler.emit import emit
    from sdllm.compiler.pipeline import compile_model

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if outputs._renameat2(str(tmp_path / "a"), str(tmp_path / "b"), outputs._RENAME_EXCHANGE) in (errno.EINVAL, errno.ENOSYS):
        pytest.skip("this file system cannot exchange two names")
    out = tmp_path / "build"
    shutil.copytree(default_build, out)
    missing, rename = [], os.rename

    def spy(src, dst):
        rename(src, dst)
        missing.append(not (out / "network.json").is_file())

    monkeypatch.setattr(os, "rename", spy)
    emit(compile_model(default_model, "loihi2"), str(out))
    assert not any(missing) and (out / "network.json").is_file()


def test_a_symlinked_output_is_replaced_where_it_points(default_model, default_build, tmp_path):
    from sdllm.compiler.emit import emit
    from sdllm.compiler.pipeline import compile_model

    real = tmp_path / "real"
    shutil.copytree(default_build, real)
    (tmp_path / "link").symlink_to("real")
    emit(compile_model(default_model, "loihi2"), str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "real"
    assert snapshot(real, times=False) == snapshot(default_build, times=False)
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_two_compiles_to_one_target_both_succeed_and_the_target_never_goes_missing(default_model_path, default_build, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(default_build, out)
    missing, done = [], threading.Event()

    def watch():
        while not done.is_set():
            if not os.path.isfile(out / "network.json"):
                missing.append(time.monotonic())
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        procs = [subprocess.Popen([os.path.join(BIN, "sdllm-compile"), default_model_path, "-o", str(out), "-q",
                                   "--rate-tokens", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        done.set()
        watcher.join()
    for p, (stdout, err) in zip(procs, results):
        assert p.returncode == 0 and err == "", err
        assert "wrote" in stdout
    assert not missing
    assert sorted(os.listdir(tmp_path)) == ["build"]
    assert snapshot(out, times=False) == snapshot(default_build, times=False)


def test_model_pt_is_byte_deterministic_with_the_umask_mode(default_model, tmp_path):
    old = os.umask(0o027)
    try:
        modelformat.save(default_model, str(tmp_path / "a.pt"))
        modelformat.save(default_model, str(tmp_path / "b.pt"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a.pt", "b.pt"]


# signals ----------------------------------------------------------------------------------------

def _session(sid) -> list:
    return subprocess.run(["ps", "-o", "pid=", "-s", str(sid)], capture_output=True, text=True).stdout.split()


def _start(args, tmp):
    return subprocess.Popen([os.path.join(BIN, args[0]), *map(str, args[1:])], start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals,
                            env={**os.environ, "TMPDIR": str(tmp)})


def _ends_cleanly(p, sig, tmp):
    """Exit code 128 + the signal, one line, no process of its session left, TMPDIR empty."""
    try:
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            for pid in _session(p.pid):
                os.kill(int(pid), signal.SIGKILL)
    one_line(p.returncode, err, 128 + sig)
    assert f"interrupted ({signal.Signals(sig).name})" in err
    assert _wait(lambda: not _session(p.pid), 30, 0.25), subprocess.run(["ps", "-o", "pid,args", "-s", str(p.pid)],
                                                                          capture_output=True, text=True).stdout
    assert os.listdir(tmp) == []


@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, False),
                                           (signal.SIGHUP, True)], ids=["INT-terminal", "TERM-kill", "HUP-kill", "HUP-terminal"])
def test_a_signal_stops_a_lava_run_and_leaves_nothing(default_build, tmp_path, sig, to_group):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = _start(["sdllm-run", default_build, "--prompt", "The if", "--max-new-tokens", "100"], tmp)
    assert _wait(lambda: len(_session(p.pid)) >= 10, 120), p.communicate()  # Lava has started its workers
    time.sleep(2)
    segments = _shared_memory(_session(p.pid))
    assert segments and any(n.startswith("pymp-") for n in os.listdir(tmp))  # the shared-memory manager's socket
    (os.killpg if to_group else os.kill)(p.pid, sig)
    _ends_cleanly(p, sig, tmp)
    assert _gone(segments)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_signal_while_a_build_is_written_leaves_the_old_build(default_build, tmp_path, sig):
    tmp, world = tmp_path / "tmp", tmp_path / "world"
    tmp.mkdir()
    world.mkdir()
    out = world / "build"
    shutil.copytree(default_build, out)
    before = snapshot(world)
    p = _start(["sdllm-compile", "--synthetic", "smollm2-135m", "--target", "kapoho_point", "-o", out, "-q"], tmp)
    assert _wait(lambda: any(".tmp-" in n for n in os.listdir(world)), 300, 0.01), p.communicate()
    time.sleep(0.3)
    os.kill(p.pid, sig)
    _ends_cleanly(p, sig, tmp)
    assert snapshot(world) == before


def _maps(pid, needle) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return needle in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("command, library, sig", [("run", "_multiarray_umath", signal.SIGINT), ("run", "_multiarray_umath", signal.SIGTERM),
                                                    ("convert", "libtorch", signal.SIGINT)],
                         ids=["numpy-INT", "numpy-TERM", "torch-INT"])
def test_a_signal_while_the_libraries_import_is_one_line(default_build, tmp_path, command, library, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = {"run": ["sdllm-run", default_build, "--prompt", "x", "--backend", "fast"],
            "convert": ["sdllm-convert", "-o", tmp_path / "m.pt"]}[command]
    p = _start(args, tmp)
    assert _wait(lambda: _maps(p.pid, library), 60, 0.002), p.communicate()  # the library is being imported
    os.kill(p.pid, sig)
    _ends_cleanly(p, sig, tmp)
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("command", ["convert", "eval", "run-lockstep", "demo"])
def test_sigterm_ends_every_command_with_nothing_half_written(default_model_path, default_build, tmp_path, command):
    tmp, world = tmp_path / "tmp", tmp_path / "world"
    tmp.mkdir()
    world.mkdir()
    (world / "m.pt").write_bytes(b"an older model, kept")
    args = {"convert": ["sdllm-convert", "-o", world / "m.pt"],
            "eval": ["sdllm-eval", default_model_path, "--plot", world / "p.png", "--ablation"],
            "run-lockstep": ["sdllm-run", default_build, "--prompt", "The if", "--max-new-tokens", "120", "--backend", "lockstep"],
            "demo": ["sdllm-demo", "--out", world]}[command]
    before = snapshot(world)
    p = _start(args, tmp)
    assert _wait(lambda: _maps(p.pid, "libtorch") or _maps(p.pid, "_multiarray_umath"), 60), p.communicate()
    if command == "run-lockstep":  # its run takes about a second: wait for its first generated tokens
        seen = ""
        while "generated: " not in seen or len(seen.split("generated: ")[1]) < 3:
            seen += p.stdout.read(1) or pytest.fail(f"ended before generating: {seen!r}")
    else:
        time.sleep(2)  # at work
    os.kill(p.pid, signal.SIGTERM)
    _ends_cleanly(p, signal.SIGTERM, tmp)
    assert snapshot(world) == before


_SIGNAL_WHERE_PYTHON_DROPS_IT = """
import ctypes, os, pathlib, signal, sys, time
from sdllm.cli import guarded

class HalfBuilt:  # as an object whose constructor the signal cut short
    def __del__(self):
        self.handle.close()

def body():
    HalfBuilt()  # its finalizer's complaint is reported: no signal yet
    callback = ctypes.CFUNCTYPE(None)(lambda: [os.kill(os.getpid(), signal.SIGTERM), sum(range(10**5))])
    callback()  # C code calls back into Python, as numba's compiler does; the signal arrives there
    garbage = [HalfBuilt() for _ in range(3)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # work the signal should have ended
        pass
    pathlib.Path(sys.argv[1]).write_text("written after the signal")

sys.exit(guarded("probe", body))
"""


def test_a_signal_python_drops_in_a_c_callback_still_ends_the_command(tmp_path):
    """Python drops an exception raised in a C callback or a finalizer: a SIGTERM taken there must
    still end the command (it once ran to the end and exited 0), and the finalizers of what the
    signal cut short must not add tracebacks to its one line."""
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _SIGNAL_WHERE_PYTHON_DROPS_IT, tmp_path / "out"],
                       capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 20, p.stderr
    before, _, rest = p.stderr.partition("probe: interrupted (SIGTERM)")
    assert "AttributeError" in before and rest.count("\n") == 1 and "Traceback" not in rest, p.stderr
    assert p.returncode == 128 + signal.SIGTERM, p.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture
def lava_segments(monkeypatch):
    """The shared-memory segments of the Lava runs in this test, as mapped when they stop."""
    import multiprocessing

    seen, real_stop = set(), lava_backend.stop

    def stop(anchor, *args):
        seen.update(_shared_memory([os.getpid(), *(c.pid for c in multiprocessing.active_children())]))
        real_stop(anchor, *args)

    monkeypatch.setattr(lava_backend, "stop", stop)
    return seen


def _gone(segments) -> bool:
    return bool(segments) and not [s for s in segments if os.path.exists(f"/dev/shm/{s}")]


def test_a_failing_lava_worker_reports_its_own_exception(default_build, monkeypatch, lava_segments):
    import multiprocessing

    from sdllm.cores import unit
    from sdllm.errors import SdllmError
    from sdllm.formats.build import read

    def broken(self, *args):
        raise ValueError("boom")

    monkeypatch.setattr(unit.NeuronUnitCore, "step", broken)  # the forked workers inherit it
    with pytest.raises(SdllmError, match=r"^Lava run failed: ValueError: boom \(in L\d\.unit\)$"):
        lava_backend.run_lava(read(default_build), [1, 2], 1)
    assert multiprocessing.active_children() == []
    assert _gone(lava_segments)


def test_a_lava_run_that_will_not_stop_is_ended(default_build, monkeypatch, lava_segments):
    """Lava can leave a worker waiting for a STOP that never comes; its processes are then ended and
    its shared memory unlinked through its manager."""
    import multiprocessing

    from sdllm.formats.build import read

    monkeypatch.setattr(lava_lifetime, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(lava_lifetime, "_quiet_stop", lambda anchor: threading.Event().wait())
    result = lava_backend.run_lava(read(default_build), [1, 2], 1)
    assert len(result.tokens) == 3
    assert multiprocessing.active_children() == []
    assert _gone(lava_segments)
