"""The library's doors keep the commands' promises on bad input: the Python API (`sdllm.*`), a
model's chat template, a checkpoint's side files, the user's text files and the commands' numeric
flags. Each refusal is one `SdllmError` line (exit code 2 at a command) naming the thing, the
limit and the value — no traceback, no hang, no gigabytes allocated first."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import sdllm
from sdllm.errors import SdllmError
from sdllm.formats.model import QuantSpec

BIN = os.path.dirname(sys.executable)


def one_line(e: SdllmError) -> str:
    text = str(e)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# chat templates ---------------------------------------------------------------------------------

BUDGET_TEMPLATES = {
    "nested loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "takes longer than"),
    "a huge indent": ("{{ 'a\nb\nc'|indent(10**9) }}", "needs more than 1 GiB of memory"),
    "string repetition": ("{{ 'ab' * 10**10 }}", "needs more than 1 GiB of memory"),
    "list repetition": ("{{ ([1, 2] * 10**9)|length }}", "needs more than 1 GiB of memory"),
    "a format width": ("{{ '{:>9999999999}'.format('a') }}", "needs more than 1 GiB of memory"),
    "a %-format width": ("{{ '%9999999999d' % 1 }}", "needs more than 1 GiB of memory"),
    "a center width": ("{{ 'a'.center(10**10) }}", "needs more than 1 GiB of memory"),
    "lorem ipsum": ("{{ lipsum(10**6) }}", "chat template:"),
    "big output": ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "renders more than 1,048,576 characters"),
    "doubling in a namespace": ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                                "{% endfor %}{{ ns.s|length }}", "chat template:"),
}


@pytest.mark.parametrize("case", sorted(BUDGET_TEMPLATES))
def test_a_chat_template_past_its_budget_is_one_line_and_costs_this_process_nothing(case):
    from sdllm.chat import RENDER_TIME_S, render

    template, needle = BUDGET_TEMPLATES[case]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(SdllmError) as e:
        render({"type": "bytes", "chat_template": template}, [{"role": "user", "content": "hi"}])
    assert needle in one_line(e.value) and str(e.value).startswith("chat template: ")
    assert time.monotonic() - start < RENDER_TIME_S + 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 << 10  # KiB: this process did not grow


@pytest.mark.parametrize("template, message", [
    ("{{ range(10**9)|list }}", "chat template: OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "chat template: recursion deeper than"),
    ("{{ raise_exception('first line\nsecond line\n\n  third') }}", "chat template: first line second line third"),
    ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "chat template: recursion deeper than"),
    ("{{ messages[0]['content'] / 0 }}", "chat template: TypeError:"),
    ("{{ 1 // 0 }}", "chat template: ZeroDivisionError:"),
    ("{% for %}", "chat template: not a valid Jinja template"),
], ids=["overflowing range", "recursive macro", "raise_exception with newlines", "nesting", "type", "division",
        "syntax"])
def test_a_template_error_is_one_line(template, message):
    from sdllm.chat import render

    with pytest.raises(SdllmError) as e:
        render({"type": "bytes", "chat_template": template}, [{"role": "user", "content": "hi"}])
    assert one_line(e.value).startswith(message)


def test_a_chat_template_within_its_budget_renders_through_the_api(default_build):
    build = sdllm.load_build(default_build)
    build.network.tokenizer["chat_template"] = "{% for m in messages %}{{ m.content|upper }}: {% endfor %}"
    assert build.chat_prompt("if") == list(b"IF: ")
    build.network.tokenizer["chat_template"] = BUDGET_TEMPLATES["a huge indent"][0]
    for backend in ("fast", "lockstep"):
        with pytest.raises(SdllmError, match="^chat template: needs more than 1 GiB of memory$"):
            build.run("if", 2, chat=True, backend=backend)


# Hugging Face side files ------------------------------------------------------------------------

HF_CONFIG = {"model_type": "llama", "vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32}


def _hf_checkpoint(path):
    """A complete, tiny Hugging Face LLaMA directory (random weights, a word-level tokenizer)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    from sdllm.models.source.importers import HF_LAYER_NAMES, HF_NAMES
    from sdllm.models.source.llama import Llama, LlamaConfig

    path.mkdir()
    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=256, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32))
    ours = {v: k for k, v in HF_NAMES.items()}
    ours.update({f"layers.0.{v}": f"model.layers.0.{k}" for k, v in HF_LAYER_NAMES.items()})
    save_file({ours[k]: v.clone().contiguous() for k, v in model.state_dict().items() if k in ours}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(HF_CONFIG))
    vocab = {f"w{i}": i for i in range(255)} | {"[UNK]": 255}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    return path


DEEP = b"[" * 100_000 + b"]" * 100_000
SIDE_FILES = {
    "tokenizer_config.json not UTF-8": ("tokenizer_config.json", b'{"chat_template": "\xff\xfe"}', "not UTF-8 text (byte 19"),
    "tokenizer_config.json nested 100k deep": ("tokenizer_config.json", DEEP, "nested deeper than JSON decoding allows"),
    "tokenizer_config.json with a lone surrogate": ("tokenizer_config.json", b'{"chat_template": "a\\ud800b"}',
                                                    "a string holds the lone surrogate U+D800"),
    "tokenizer_config.json a number template": ("tokenizer_config.json", b'{"chat_template": 5}',
                                                "chat_template: expected a string or named templates, found int"),
    "tokenizer.json not UTF-8": ("tokenizer.json", b'{"version": "\xc3\x28"}', "not UTF-8 text (byte 13"),
    "tokenizer.json nested 100k deep": ("tokenizer.json", DEEP, "tokenizer.json is not a readable tokenizer"),
    "chat_template.jinja not UTF-8": ("chat_template.jinja", b"{{ '\xff' }}", "not UTF-8 text (byte 4"),
    "config.json not UTF-8": ("config.json", b'{"model_type": "\xff"}', "not UTF-8 text (byte 16"),
}


@pytest.mark.parametrize("case", sorted(SIDE_FILES))
def test_a_hostile_hugging_face_side_file_is_one_line_naming_it(tmp_path, case):
    name, content, needle = SIDE_FILES[case]
    src = _hf_checkpoint(tmp_path / "hf")
    if name == "chat_template.jinja":
        (src / "tokenizer_config.json").write_text("{}")
    (src / name).write_bytes(content)
    with pytest.raises(SdllmError) as e:
        sdllm.convert(str(src), rotation="hadamard", calib_windows=1)
    assert needle in one_line(e.value) and (name in str(e.value) or str(src) in str(e.value)), str(e.value)


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json", "chat_template.jinja", "config.json"])
def test_a_side_file_that_is_a_fifo_or_a_directory_is_one_line_not_a_hang(tmp_path, name):
    src = _hf_checkpoint(tmp_path / "hf")
    if name == "chat_template.jinja":
        (src / "tokenizer_config.json").write_text("{}")
    for kind, make in (("a FIFO, not a regular file", os.mkfifo), ("a directory, not a file", os.mkdir)):
        if (src / name).exists():
            (src / name).unlink() if not (src / name).is_dir() else (src / name).rmdir()
        make(src / name)
        with pytest.raises(SdllmError, match=f"{name}: is {kind}"):
            sdllm.convert(str(src), rotation="hadamard", calib_windows=1)


def test_a_clean_hugging_face_checkpoint_converts(tmp_path):
    """The checkpoint the cases above damage is itself good: the refusals are the damage's."""
    src = _hf_checkpoint(tmp_path / "hf")
    (tmp_path / "words.txt").write_text(" ".join(f"w{i % 255}" for i in range(100)))
    model = sdllm.convert(str(src), rotation="hadamard", calib_windows=1, max_seq_len=16,
                          calib_text=str(tmp_path / "words.txt"))
    assert model.config.dim == 32 and model.tokenizer["chat_template"] == "{{ messages[0]['content'] }}"


# the user's text files --------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["sdllm-eval", "sdllm-convert"])
def test_a_lone_surrogate_in_a_json_lines_text_is_one_line(default_model_path, tmp_path, command):
    text = tmp_path / "t.jsonl"
    text.write_text('{"text": "fine"}\n{"text": "a \\udc80 b"}\n')
    args = {"sdllm-eval": [default_model_path, "--text", text, "--plot", tmp_path / "p.png"],
            "sdllm-convert": ["-o", tmp_path / "m.pt", "--calib-text", text]}[command]
    p = subprocess.run([os.path.join(BIN, command), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"{text}: line 2: text: a string holds the lone surrogate U+DC80" in p.stderr
    assert sorted(os.listdir(tmp_path)) == ["t.jsonl"]


def test_a_fifo_or_a_directory_as_text_is_one_line_not_a_hang(tmp_path):
    from sdllm.models.source import corpus

    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(SdllmError, match="fifo.txt: is a FIFO, not a regular file"):
        corpus.read_texts([str(tmp_path / "fifo.txt")])
    with pytest.raises(SdllmError, match="dir.txt: is a directory, not a file"):
        corpus.read_texts([str(tmp_path / "dir.txt")])


def test_text_bigger_than_the_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from sdllm import resources
    from sdllm.models.source import corpus

    big = tmp_path / "big.txt"
    big.write_bytes(b"some text\n" * 1_000_000)
    monkeypatch.setattr(resources, "available_memory", lambda: 20_000_000)
    monkeypatch.setattr(corpus.files, "read_text", lambda *a: pytest.fail("read before the memory was checked"))
    with pytest.raises(SdllmError, match=r"big.txt: needs at least 28.6 MiB of memory, this machine has 19.1 MiB available"):
        corpus.read_texts([str(big)])


def test_reading_a_text_file_costs_a_few_times_its_size(tmp_path):
    """Calibration windows from a 64 MB file take at their peak less than 4x its size (it was
    ~16x: the text copied, encoded, widened to int64) — counted by tracemalloc, which sees
    Python's and numpy's allocations whatever the machine's swapping does to the RSS."""
    import tracemalloc

    from sdllm.models.source import corpus
    from sdllm.models.source.importers import BYTES

    big = tmp_path / "big.txt"
    big.write_bytes(b"The quick brown fox jumps over the lazy dog.\n" * 1_500_000)
    tracemalloc.start()
    try:
        rows = corpus.text_windows(BYTES, [str(big)], 128, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows.shape == (4, 128) and rows.dtype == np.int64
    assert rows[0].tolist() == list(b"The quick brown fox jumps over the lazy dog.\n" * 3)[:128]
    assert peak < 4 * big.stat().st_size, peak / big.stat().st_size


# the commands' numeric flags --------------------------------------------------------------------

FLAGS = {
    "convert seed past 64 bits": ("sdllm.cli.convert", ["--seed", str(2 ** 64 + 1)], "--seed: an integer in 0..4,294,967,295"),
    "convert seed negative": ("sdllm.cli.convert", ["--seed", "-1"], "--seed: an integer in 0..4,294,967,295, got -1"),
    "a superscript digit in --point-bits": ("sdllm.cli.convert", ["--point-bits", "down=\u00b2"], "--point-bits: expected POINT=BITS"),
    "a fraction in --point-bits": ("sdllm.cli.convert", ["--point-bits", "down=\u00bd"], "--point-bits: expected POINT=BITS"),
    "point bits past 64 bits": ("sdllm.cli.convert", ["--point-bits", f"down={2 ** 70}"], "--point-bits down: must be within 2..8"),
    "a NaN clip budget": ("sdllm.cli.convert", ["--clip-budget", "nan"], "--clip-budget: must be within 0..10"),
    "an infinite balance": ("sdllm.cli.convert", ["--balance", "inf"], "--balance: must be within 0..1 (an exponent), got inf"),
    "theta past 64 bits": ("sdllm.cli.convert", ["--theta", str(2 ** 70)], "--theta: must be within 0..6"),
    "rotation steps past 64 bits": ("sdllm.cli.convert", ["--rotation-steps", str(2 ** 70)], "--rotation-steps: must be within"),
    "context past 64 bits": ("sdllm.cli.convert", ["--max-seq-len", str(2 ** 70)], "--max-seq-len: at most the model's context"),
    "synthetic seed negative": ("sdllm.cli.compile", ["--synthetic", "smollm2-135m", "--seed", "-1"],
                                "--seed: an integer in 0..9,223,372,036,854,775,807, got -1"),
    "synthetic seed past 64 bits": ("sdllm.cli.compile", ["--synthetic", "smollm2-135m", "--seed", str(2 ** 64)],
                                    "--seed: an integer in 0..9,223,372,036,854,775,807"),
    "run seed past 64 bits": ("sdllm.cli.run", ["--prompt", "x", "--seed", str(2 ** 64)], "--seed: an integer in 0..2**63-1"),
    "run temperature NaN": ("sdllm.cli.run", ["--prompt", "x", "--temperature", "nan"], "--temperature: a finite number >= 0"),
    "run top-p past 1": ("sdllm.cli.run", ["--prompt", "x", "--top-p", "1e308"], "--top-p: a number in (0, 1], got 1e+308"),
    "run new tokens past 64 bits": ("sdllm.cli.run", ["--prompt", "x", "--max-new-tokens", str(2 ** 70)],
                                    "--prompt + --max-new-tokens:"),
}


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_an_extreme_numeric_flag_is_one_line(default_build, tmp_path, capfd, case):
    import importlib

    module, args, needle = FLAGS[case]
    target = {"sdllm.cli.convert": ["-o", str(tmp_path / "m.pt")], "sdllm.cli.compile": ["-o", str(tmp_path / "b")],
              "sdllm.cli.run": [default_build, "--backend", "fast"]}[module]
    capfd.readouterr()
    code = importlib.import_module(module).main([*target, *args])
    out, err = capfd.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert os.listdir(tmp_path) == []


# the Python API's types -------------------------------------------------------------------------

RUN_CALLS = {
    "a string temperature": (dict(temperature="0.5"), "--temperature: a finite number >= 0 (0: greedy), got '0.5'"),
    "a float max_new_tokens": (dict(max_new_tokens=2.0), "--max-new-tokens: must be at least 1, got 2.0"),
    "a float top_k": (dict(top_k=3.0), "--top-k: an integer >= 0 (0: no limit), got 3.0"),
    "a float seed": (dict(seed=1.0), "--seed: an integer in 0..2**63-1, got 1.0"),
    "a bool seed": (dict(seed=True), "--seed: an integer in 0..2**63-1, got True"),
    "a string top_p": (dict(top_p="high"), "--top-p: a number in (0, 1], got 'high'"),
    "a None temperature": (dict(temperature=None), "--temperature: a finite number >= 0 (0: greedy), got None"),
    "a list backend": (dict(backend=["fast"]), "--backend: one of lava, lockstep, fast, got ['fast']"),
    "a None granularity": (dict(granularity=None), "--granularity: one of auto, core, chip, got None"),
    "a string chat": (dict(chat="yes"), "chat: True or False, got 'yes'"),
    "a string stop_at_eos": (dict(stop_at_eos="no"), "stop_at_eos: True or False, got 'no'"),
    "a non-callable on_text": (dict(on_text="print"), "on_text: a callable or None, got 'print'"),
    "a non-callable on_token": (dict(on_token=5), "on_token: a callable or None, got 5"),
    "a number prompt": (dict(prompt=5), "prompt: text, token ids (integers) or chat messages, got 5"),
    "a number chat prompt": (dict(prompt=5, chat=True), "prompt: with chat: a message (text) or a list of"),
}


@pytest.mark.parametrize("case", sorted(RUN_CALLS))
def test_a_wrong_type_at_build_run_is_the_same_line_on_every_backend(default_build, case):
    options, message = RUN_CALLS[case]
    options = {"prompt": "if", "max_new_tokens": 2, **options}
    build = sdllm.load_build(default_build)
    lines = set()
    for backend in ("lava", "lockstep", "fast"):
        call = {"backend": backend, **options}
        with pytest.raises(SdllmError) as e:
            build.run(call.pop("prompt"), call.pop("max_new_tokens"), **call)
        lines.add(one_line(e.value))
    assert lines == {message} or (len(lines) == 1 and lines.pop().startswith(message))


def test_the_api_checks_every_argument_before_any_work(default_build, tmp_path):
    calls = [
        (lambda: sdllm.convert(123), "src: a path (a string or os.PathLike), got 123"),
        (lambda: sdllm.convert(calib_windows=2.0), "--calib-windows: must be at least 1, got 2.0"),
        (lambda: sdllm.convert(max_seq_len="64"), "--max-seq-len: must be at least 2, got '64'"),
        (lambda: sdllm.convert(act_bits="4"), "--act-bits: must be within 2..8, got '4'"),
        (lambda: sdllm.convert(seed=0.5), "--seed: an integer in 0..4,294,967,295, got 0.5"),
        (lambda: sdllm.convert(rotate="no"), "rotate: True or False, got 'no'"),
        (lambda: sdllm.convert(point_bits={"down": 8}), "point_bits: a tuple of (point name, integer) pairs"),
        (lambda: sdllm.convert(quant="W4A4"), "quant: a QuantSpec or None, got 'W4A4'"),
        (lambda: sdllm.convert(quant=QuantSpec(balance="x")), "--balance: must be within 0..1 (an exponent), got 'x'"),
        (lambda: sdllm.convert(calib_text=[1]), "--calib-text[0]: a path (a string or os.PathLike), got 1"),
        (lambda: sdllm.convert(calib_text=str(tmp_path / "missing.txt")), "missing.txt: no such file"),
        (lambda: sdllm.convert(rotation_from=7), "--rotation-from: a path (a string or os.PathLike), got 7"),
        (lambda: sdllm.load_model(None), "path: a path (a string or os.PathLike), got None"),
        (lambda: sdllm.load_model(str(tmp_path)), "is a directory, not a file"),
        (lambda: sdllm.compile(123), "model: a path (a string or os.PathLike), got 123"),
        (lambda: sdllm.compile(str(tmp_path / "m.pt"), target=None), "target: a path (a string or os.PathLike), got None"),
        (lambda: sdllm.compile(str(tmp_path / "m.pt"), output=""), "output: a path (a non-empty string without NUL"),
        (lambda: sdllm.compile(str(tmp_path / "m.pt"), placement="best"), "--placement: one of traffic, greedy, got 'best'"),
        (lambda: sdllm.compile(str(tmp_path / "m.pt"), rate_tokens=1.5), "--rate-tokens: must be >= 0, got 1.5"),
        (lambda: sdllm.load_build(123), "path: a path (a string or os.PathLike), got 123"),
        (lambda: sdllm.run(default_build, "if", "2", backend="fast"), "--max-new-tokens: must be at least 1, got '2'"),
        (lambda: sdllm.load_build(default_build).encode(b"if"), "text: a string, got b'if'"),
    ]
    for call, message in calls:
        with pytest.raises(SdllmError) as e:
            call()
        assert message in one_line(e.value), (message, str(e.value))
    assert os.listdir(tmp_path) == []


def test_a_run_report_written_where_it_cannot_be_is_one_line(default_build, tmp_path):
    run = sdllm.load_build(default_build).run("if", 2, backend="fast")
    report = run.report(raster_position=None)
    for where, message in ((None, "out_dir: a path (a string or os.PathLike), got None"),
                           ("", "out_dir: a path (a non-empty string"),
                           ("/proc", "/proc: cannot write: directory /proc takes no new files")):
        with pytest.raises(SdllmError) as e:
            report.write(where)
        assert message in one_line(e.value), str(e.value)
    with pytest.raises(SdllmError, match=r"^raster_position: 0\.\.2 \(the run's positions\), got 1.0$"):
        run.report(raster_position=1.0)


# the commands' last second and their outputs ----------------------------------------------------

@pytest.mark.parametrize("report", ["", "/proc", "/sys/kernel"])
def test_a_run_report_nowhere_is_refused_before_the_run(default_build, report):
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--prompt", "x", "--backend", "fast",
                        "--report", report], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1, p.stdout + p.stderr
    assert p.stderr.startswith("sdllm-run: error: --report")


def test_load_model_names_what_is_there_instead_of_a_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(SdllmError, match="fifo.pt: is a FIFO, not a regular file"):
        sdllm.load_model(str(tmp_path / "fifo.pt"))
    with pytest.raises(SdllmError, match="dir.pt: is a directory, not a file"):
        sdllm.load_model(str(tmp_path / "dir.pt"))
    with pytest.raises(SdllmError, match="none.pt: no such file"):
        sdllm.load_model(str(tmp_path / "none.pt"))


@pytest.mark.parametrize("delay_s", [0.0, 0.15, 0.4, 0.8])
def test_a_signal_as_a_command_exits_is_still_its_one_line(default_build, delay_s):
    """After the last line a command prints, Python's shutdown used to restore the default
    SIGTERM for about a second: a signal then ended it silently (-15)."""
    p = subprocess.Popen([os.path.join(BIN, "sdllm-run"), default_build, "--prompt", "x", "--backend", "fast",
                          "--max-new-tokens", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in p.stdout:
        if line.startswith("45 nm estimate"):
            break
    time.sleep(delay_s)
    try:
        os.kill(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, err = p.communicate(timeout=60)
    assert p.returncode in (0, 128 + signal.SIGTERM), (p.returncode, err)
    if p.returncode:
        assert err == "sdllm-run: interrupted (SIGTERM); nothing half-written is left, no process left running\n"
    else:
        assert err == ""


def test_array_prompt_ids_and_paths_as_pathlike_are_taken(default_build, tmp_path):
    """The checks take what the API documents in any of its usual forms."""
    import pathlib

    build = sdllm.load_build(pathlib.Path(default_build))
    run = build.run(np.array([105, 102]), np.int64(2), backend="fast", temperature=np.float32(0.5), top_k=np.int64(3),
                    seed=np.uint8(1))
    assert len(run.generated) == 2
