"""The Python API (`sdllm.api`, exposed lazily from `sdllm`): the README's example runs as written,
the objects carry what the commands print, and `import sdllm` stays light."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import sdllm
from sdllm.errors import SdllmError
from sdllm.models.integer.reference import IntegerSDLLM

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (code,) = [b for b in blocks if "import sdllm" in b]
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, str(README), "exec"), scope)
    run, report = scope["run"], scope["report"]
    assert (tmp_path / "build" / "network.json").is_file()
    assert (tmp_path / "run_report" / "run.html").is_file() and (tmp_path / "run_report" / "run.json").is_file()
    tokens, logits, _ = IntegerSDLLM(scope["model"].file).generate(run.prompt_tokens, 8, choose=run.sampler)
    assert run.tokens == tokens and np.array_equal(run.logits, logits)
    assert report.generated_ids == run.generated and report.sops_per_token == pytest.approx(run.sops_per_token)


def test_build_objects_carry_the_mapping_and_the_run(default_build):
    build = sdllm.load_build(default_build)
    with open(os.path.join(default_build, "report.json")) as f:
        assert build.report.data == json.load(f)
    assert build.report.cores_used == len(build.network.cores) - 1 and build.period == build.report.timesteps_per_token
    assert build.report.text.startswith("sdllm core-mapping report") and build.report.html.startswith("<!DOCTYPE html>")
    streamed, ids = [], []
    run = build.run(list(b"for "), 5, backend="fast", on_text=streamed.append, on_token=ids.append)
    assert "".join(streamed) == run.text == bytes(run.generated).decode("utf-8", "replace")
    assert ids == run.generated and len(run.generated) == 5 and not run.stopped_at_eos
    assert run.timesteps == 3 * build.interval + 5 * build.period and build.interval < build.period and run.energy["sops_per_token"] == run.sops_per_token
    with pytest.raises(AttributeError, match="no field 'nope'"):
        _ = build.report.nope


def test_api_errors_are_one_line(tmp_path):
    with pytest.raises(SdllmError, match="unknown option"):
        sdllm.convert(act_bit=4)
    with pytest.raises(SdllmError, match="--act-bits: must be within 2..8, got 12"):
        sdllm.convert(act_bits=12)
    with pytest.raises(SdllmError, match="not a build directory"):
        sdllm.load_build(str(tmp_path))


@pytest.mark.parametrize("prompt, options, message", [
    ([256], {}, "prompt: token ids must be within 0..255 (the vocabulary), got 256"),
    ([65, -1], {}, "prompt: token ids must be within 0..255 (the vocabulary), got -1"),
    (["a", "b"], {}, "prompt: text, token ids (integers) or chat messages, got ['a', 'b']"),
    ([65.0], {}, "prompt: text, token ids (integers) or chat messages, got [65.0]"),
    (None, {}, "prompt: text, token ids (integers) or chat messages, got None"),
    ("hi", {"granularity": "socket"}, "--granularity: one of auto, core, chip, got 'socket'"),
], ids=["past the vocabulary", "negative", "strings", "floats", "none", "granularity"])
def test_a_bad_run_request_is_one_line_before_any_work(default_build, prompt, options, message):
    build = sdllm.load_build(default_build)
    with pytest.raises(SdllmError) as e:
        build.run(prompt, 2, backend="fast", **options)
    assert str(e.value) == message


def test_import_sdllm_is_light_and_the_api_is_there_on_first_use():
    code = ("import sys, sdllm\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lava', 'matplotlib', 'transformers') "
            "or m.startswith(('sdllm.models', 'sdllm.compiler', 'sdllm.runtime'))]\n"
            "assert not heavy, heavy\n"
            "assert callable(sdllm.compile) and sdllm.Build.__module__ == 'sdllm.api'\n"
            "assert sdllm.SDLLM.__module__ == 'sdllm.runtime.lava_procs.network'\n"
            "print(sorted(sdllm.__all__))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for name in ("convert", "compile", "load_build", "run", "Build", "Run", "MappingReport", "RunReport", "SDLLM"):
        assert f"'{name}'" in p.stdout
