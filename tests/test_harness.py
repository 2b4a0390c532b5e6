"""sdllm as an lm-evaluation-harness model (`sdllm.harness`) and the zero-shot task built from the
stdlib (`benchmarks/docstring_task.py`). Offline: the task is generated locally and read with the
harness's own `json` loader."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402

from sdllm.errors import SdllmError  # noqa: E402
from sdllm.harness import SdllmLM  # noqa: E402
from sdllm.models.integer.likelihood import nll  # noqa: E402
from sdllm.models.integer.reference import IntegerSDLLM  # noqa: E402
from sdllm.models.source.importers import default_float, load_float  # noqa: E402
from sdllm.tokenizer import decode  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(ROOT, "benchmarks", "docstring_task.py")
TASK = "sdllm_docstrings"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    """Nothing may be downloaded; the harness's dataset cache stays in the test's directory."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


def _generate(out_dir, hash_seed="0"):
    p = subprocess.run([sys.executable, GENERATOR, "-o", str(out_dir)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert p.returncode == 0, p.stderr
    return {name: (out_dir / name).read_bytes() for name in (f"{TASK}.jsonl", f"{TASK}.yaml")}


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    _generate(out)
    return out


def _requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def _evaluate(lm, task_dir, limit):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model=lm, tasks=[TASK], limit=limit, log_samples=True, bootstrap_iters=0,
                           task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))


def _reference_loglikelihood(ref, context: bytes, continuation: bytes):
    """The integer reference on the whole window, from scratch: the harness's left cut of a window
    longer than the context, the continuation's rows scored with `nll` (what sdllm-eval uses)."""
    n = ref.cfg.max_seq_len
    window = list(context + continuation)[-(n + 1):]
    ref.reset()
    logits, _ = ref.forward(window[:-1], 0)
    rows, target = logits[len(window) - 1 - len(continuation):], np.frombuffer(continuation, np.uint8).astype(np.int64)
    return -float(nll(rows, target).sum()), bool((rows.argmax(-1) == target).all())


@pytest.mark.parametrize("backend", ["integer", "fast"])
def test_task_loglikelihoods_equal_the_integer_reference(backend, default_model, default_model_path, default_build, task_dir):
    args = f"model={default_model_path},backend={backend}" + (f",build={default_build}" if backend == "fast" else "")
    lm = SdllmLM.create_from_arg_string(args)
    results = _evaluate(lm, task_dir, limit=6)
    samples = results["samples"][TASK]
    ref = IntegerSDLLM(default_model)
    pairs = [(s["arguments"][i], s["resps"][i][0]) for s in samples for i in range(len(s["arguments"]))]
    assert len(pairs) == 24 and any(len((c + t).encode()) > ref.cfg.max_seq_len + 1 for (c, t), _ in pairs)  # cut windows
    for (context, continuation), (got, greedy) in pairs:
        want = _reference_loglikelihood(ref, context.encode(), continuation.encode())
        assert (got, greedy) == want, (context[-40:], continuation)
    accuracy = np.mean([int(np.argmax([r[0][0] for r in s["resps"]]) == s["target"]) for s in samples])
    assert results["results"][TASK]["acc,none"] == accuracy


def test_rolling_loglikelihood_equals_the_integer_reference_over_the_harness_windows(default_model, default_model_path):
    lm = SdllmLM(model=default_model_path)
    ref = IntegerSDLLM(default_model)
    n = ref.cfg.max_seq_len
    short, long = "The if statement", "The while statement is used for repeated execution. " * 6
    assert len(long.encode()) > 2 * n
    got = lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [(short,), (long,)]))
    want = []
    for text in (short, long):
        total = 0.0
        for context, target in map(make_disjoint_window, get_rolling_token_windows(list(text.encode()), 10, n, 1)):
            total += _reference_loglikelihood(ref, bytes(context), bytes(target))[0]
        want.append(total)
    assert got == want
    assert got[0] == _reference_loglikelihood(ref, b"\n", short.encode())[0]  # one window: the newline byte, then the text


def test_generation_stops_at_a_stop_sequence(default_model, default_model_path):
    prompt = "The for statement"
    tokens, _, _ = IntegerSDLLM(default_model).generate(list(prompt.encode()), 40)
    text = decode({"type": "bytes"}, tokens[len(prompt):])
    assert len(text) > 12
    stop = text[8:10]
    lm = SdllmLM(model=default_model_path)
    got = lm.generate_until(_requests("generate_until", [(prompt, {"until": [stop], "max_gen_toks": 40}),
                                                         (prompt, {"until": ["\x00never"], "max_gen_toks": 7})]))
    assert got[0] == text[: text.index(stop)] and len(got[0]) <= 8
    assert got[1] == decode({"type": "bytes"}, tokens[len(prompt): len(prompt) + 7])
    floats = SdllmLM(float=default_float(), backend="float", model=default_model_path)
    float_tokens = load_float(default_float()).generate(list(prompt.encode()), 9)
    assert floats.generate_until(_requests("generate_until", [(prompt, {"until": [], "max_gen_toks": 9})])) == [
        decode({"type": "bytes"}, float_tokens[len(prompt):])]


def _hf_directory(path):
    from test_import import _hf_model, _word_tokenizer

    words = [f"w{i}" for i in range(96)]  # the test model's vocabulary of 97 with [UNK]
    tok = _word_tokenizer(words)
    tok.save(str(path / "tokenizer.json"))
    model = _hf_model(tie=False)
    model.save_pretrained(path, safe_serialization=True)
    return model, tok, words


def test_float_backend_equals_transformers_on_a_small_checkpoint(tmp_path):
    hf, tok, words = _hf_directory(tmp_path)
    rng = np.random.default_rng(0)
    pairs = [(" ".join(rng.choice(words, int(rng.integers(1, 24)))), " " + " ".join(rng.choice(words, int(rng.integers(1, 5)))))
             for _ in range(10)]
    lm = SdllmLM(float=str(tmp_path), backend="float", batch_size=4)  # right-padded batches of different lengths
    # a word is a token: every window fits the model's 32 positions
    got = lm.loglikelihood(_requests("loglikelihood", pairs))
    for (context, continuation), (ll, greedy) in zip(pairs, got):
        ctx, cont = tok.encode(context).ids, tok.encode(continuation).ids
        assert len(ctx) + len(cont) <= 33 and ctx + cont == tok.encode(context + continuation).ids
        with torch.no_grad():
            logits = hf(torch.tensor([ctx + cont[:-1]])).logits[0, len(ctx) - 1:]
        lp = torch.log_softmax(logits.double(), -1)[torch.arange(len(cont)), cont]
        assert ll == pytest.approx(float(lp.sum()), abs=1e-4, rel=1e-5)
        assert greedy == bool((logits.argmax(-1) == torch.tensor(cont)).all())


@pytest.mark.parametrize("args, message", [
    ("backend=gpu", "model_args backend: one of integer, fast, float, got 'gpu'"),
    ("modle=x.pt", "model_args: unknown argument(s) modle (known: model, float, backend, build, batch_size, max_gen_toks)"),
    ("backend=integer", "model_args model: backend=integer scores an SDLLM: model=MODEL_PT (sdllm-convert's output), got None"),
    ("model=/nowhere/x.pt", "model_args model: an existing path (an SDLLM, sdllm-convert's output), got '/nowhere/x.pt'"),
    ("backend=fast,model={model}", "model_args build: backend=fast runs a compiled network: build=DIR"),
    ("backend=float", "model_args float: backend=float scores the float model: float=SRC"),
    ("model={model},batch_size=0", "model_args batch_size: an integer >= 1 or auto, got 0"),
])
def test_bad_model_args_are_one_line(args, message, default_model_path):
    with pytest.raises(SdllmError) as e:
        SdllmLM.create_from_arg_string(args.format(model=default_model_path))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_the_command_registers_sdllm_with_the_harness_and_says_a_bad_argument_in_one_line(task_dir):
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.harness", "--model", "sdllm", "--model_args", "backend=gpu",
                        "--tasks", TASK, "--include_path", str(task_dir)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == "sdllm-lm-eval: error: model_args backend: one of integer, fast, float, got 'gpu'"
    assert "Traceback" not in p.stderr


def test_task_generator_gives_the_same_files_twice(task_dir, tmp_path):
    first = {name: (task_dir / name).read_bytes() for name in (f"{TASK}.jsonl", f"{TASK}.yaml")}
    again = _generate(task_dir, hash_seed="12345")
    assert again == first
    elsewhere = _generate(tmp_path)
    assert elsewhere[f"{TASK}.jsonl"] == first[f"{TASK}.jsonl"]
    assert str(tmp_path) in elsewhere[f"{TASK}.yaml"].decode()  # the config names its own copy
    import json

    rows = [json.loads(line) for line in first[f"{TASK}.jsonl"].decode().splitlines()]
    assert 300 <= len(rows) <= 600
    assert np.bincount([r["label"] for r in rows]).tolist() == [len(rows) // 4 + (i < len(rows) % 4) for i in range(4)]
    for r in rows:
        name = r["choices"][r["label"]]
        assert r["id"] == f"{r['module']}.{name}" and len(set(r["choices"])) == 4
        assert not any(re.search(rf"\b{re.escape(c)}\b", r["sentence"], re.I) for c in r["choices"])



def test_torch_openmp_workers_sleep_while_the_adapter_scores():
    """Imported before sdllm, torch's GNU OpenMP workers spin after each parallel region (~3 ms)
    through the numba kernels that follow; while the adapter scores they sleep at once."""
    code = """if True:
        import resource, time, torch
        from sdllm.harness import QUIET_OPENMP
        a = torch.randn(384, 384)
        def cpu_ms_while_idle():
            used = 0.0
            for _ in range(20):
                a @ a
                r = resource.getrusage(resource.RUSAGE_SELF); before = r.ru_utime + r.ru_stime
                time.sleep(0.02)
                r = resource.getrusage(resource.RUSAGE_SELF); used += r.ru_utime + r.ru_stime - before
            return 1e3 * used / 20
        spinning = cpu_ms_while_idle()
        with QUIET_OPENMP:
            quiet = cpu_ms_while_idle()
        print(torch.get_num_threads(), spinning, quiet, cpu_ms_while_idle())
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "2"})
    assert p.returncode == 0, p.stderr
    threads, spinning, quiet, after = map(float, p.stdout.split())
    assert threads == 2 and spinning > 0.5 and after > 0.5  # the default: a worker spins ~3 ms after each GEMM
    assert quiet < 0.2 * spinning and quiet < 0.5
