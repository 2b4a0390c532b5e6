"""A batch: several prompts' sequences side by side in the KV caches, sharing the layer pipeline.
Each gets, on Lava, lockstep and fast, exactly what it gets alone (tokens, logits, per-core SOPs,
NoC traffic per position; greedy or sampled) — against the integer reference — in fewer steps
than one after another; a batch the context cannot hold is one line."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from helpers import write_hw
from test_lava import check_equal

from sdllm.compiler import pipeline
from sdllm.compiler.emit import emit
from sdllm.errors import SdllmError
from sdllm.formats.build import read as load_build
from sdllm.runtime.backends import run_batch
from sdllm.runtime.lockstep import run_lockstep
from sdllm.runtime.sampling import Sampler
from sdllm.schedule import Timeline

PROMPTS = [list(b"if x"), list(b"def"), list(b"for i in")]


def _same_alone(batch, prompts, n_new, alone):
    for r, p in zip(batch, prompts):
        a = alone(p)
        assert r.tokens == a.tokens and np.array_equal(r.logits, a.logits)
        assert {k: v.tolist() for k, v in r.core_sops.items()} == {k: v.tolist() for k, v in a.core_sops.items()}
        if r.traffic is not None:
            assert np.array_equal(r.traffic, a.traffic)


def expected_steps(build, prompts, n_new) -> list:
    """Each sequence's last logits, worked out by hand: the prompts' positions an interval apart,
    one after another; then the generated tokens in turns, each an interval after the one before
    and a period after its own sequence's previous."""
    s = build.schedule
    t, last = 0, {}
    for i, p in enumerate(prompts):
        for _ in p:
            last[i] = t
            t += s.interval
    t -= s.interval
    for _ in range(n_new - 1):
        for i in sorted(last, key=lambda i: (last[i], i)):
            t = max(t + s.interval, last[i] + s.period)
            last[i] = t
    return [last[i] + s.period for i in range(len(prompts))]


@pytest.mark.parametrize("backend", ["lava", "lockstep", "fast"])
def test_each_sequence_of_a_batch_equals_its_run_alone(default_model, default_build, backend):
    build = load_build(default_build)
    batch = run_batch(build, PROMPTS, 3, backend)
    for r, p in zip(batch, PROMPTS):  # check_equal's steps are a run's alone
        check_equal(build, default_model, p, 3, replace(r, timesteps=Timeline.of(build.schedule, len(p), len(p) + 2).total))
    assert [r.timesteps for r in batch] == expected_steps(build, PROMPTS, 3)
    alone = sum(Timeline.of(build.schedule, len(p), len(p) + 2).total for p in PROMPTS)
    assert max(r.timesteps for r in batch) < alone
    if backend != "fast":
        _same_alone(batch, PROMPTS, 3, lambda p: run_lockstep(build, p, 3))


def test_a_batch_on_reduce_cores_and_split_kv_sampled(tiny_model, tmp_path):
    """A build with reduce cores, split KV cores and spanning units; sampled tokens: each sequence
    draws what it draws alone (the sampler is told its position in its own sequence)."""
    hw = write_hw(tmp_path, max_input_axons=24, synapse_memory_bits=8000)
    emit(pipeline.compile_model(tiny_model, hw, pipeline.passes()), str(tmp_path / "b"))
    build = load_build(str(tmp_path / "b"))
    assert any(c.type == "reduce" for c in build.cores)
    sampler = Sampler(temperature=1.0, seed=3)
    prompts = [list(b"ab"), list(b"xyz"), list(b"q")]
    lava = run_batch(build, prompts, 4, "lava", "chip", sampler=sampler)
    _same_alone(lava, prompts, 4, lambda p: run_lockstep(build, p, 4, sampler=sampler))
    fast = run_batch(build, prompts, 4, "fast", sampler=sampler)
    assert [r.tokens for r in fast] == [r.tokens for r in lava]
    assert [r.timesteps for r in fast] == [r.timesteps for r in lava] == expected_steps(build, prompts, 4)


def test_a_batch_stops_each_sequence_at_its_end_of_sequence(default_build):
    build = load_build(default_build)
    free = run_batch(build, PROMPTS, 4, "lockstep")
    eos = free[1].tokens[len(PROMPTS[1])]  # the second sequence's first new token: it stops there
    batch = run_batch(build, PROMPTS, 4, "lockstep", eos_id=eos)
    assert batch[1].tokens == free[1].tokens[: len(PROMPTS[1]) + 1] and len(batch[1].logits) == len(PROMPTS[1])
    for r, f, p in zip(batch, free, PROMPTS):
        new = f.tokens[len(p):]
        kept = new.index(eos) + 1 if eos in new else len(new)
        assert r.tokens == f.tokens[: len(p) + kept] and len(r.logits) == len(p) + kept - 1


def test_a_batch_beyond_the_context_is_one_line(default_build):
    build = load_build(default_build)
    ctx = build.config.max_seq_len
    with pytest.raises(SdllmError, match=rf"batch: 2 prompts \(.* tokens in all\) \+ 3 new tokens each need {ctx + 1} positions side by side, the context holds {ctx}"):
        run_batch(build, [[1] * (ctx // 2), [1] * (ctx // 2 - 3)], 3, "fast")
    with pytest.raises(SdllmError, match=r"prompt 2 of 2: prompt: token ids must be within"):
        run_batch(build, [[1], [10 ** 6]], 3, "fast")
    with pytest.raises(SdllmError, match=r"prompts: a non-empty list"):
        run_batch(build, [], 3, "fast")


def test_sdllm_run_batch_prints_each_prompt_as_it_runs_alone(default_build, tmp_path):
    import sdllm

    BIN = os.path.dirname(sys.executable)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The if\n\ndef f(x):\nimport\n", encoding="utf-8")
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--batch", str(prompts), "--backend", "lava",
                        "--max-new-tokens", "4"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    build = sdllm.load_build(default_build)
    lines = p.stdout.splitlines()
    for i, text in enumerate(["The if", "def f(x):", "import"]):
        alone = build.run(text, 4, backend="fast")
        assert lines[2 * i] == f"prompt {i + 1}:  {text!r}" and lines[2 * i + 1].startswith(f"generated: {alone.text!r}")
    assert lines[6].startswith("batch: 3 prompts, 12 new tokens in ")


@pytest.mark.parametrize("content, args, needle", [
    ("", [], "--batch: {path} holds no prompt (one per line), got an empty file"),
    ("x\n", ["--report", "{dir}"], "--report: writes the report of one --prompt run, not of --batch"),
    ("x\n", ["--prompt", "y"], "give --prompt TEXT, --batch FILE or --interactive (one of them)"),
    ("x\n" * 100, [], "batch: 100 prompts (100 tokens in all) + 16 new tokens each need 1600 positions side by side, "
                      "the context holds 128"),
    ("x\n" * 200, [], "batch: 200 prompts need 200 positions at least, the context holds 128"),
    (b"\xff\n", [], "{path}: not UTF-8 text"),
])
def test_bad_batches_are_one_line(default_build, tmp_path, content, args, needle):
    BIN = os.path.dirname(sys.executable)
    path = tmp_path / "prompts.txt"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    args = [a.format(dir=tmp_path / "r") for a in args]
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--batch", str(path), *args, "--backend", "fast"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and needle.format(path=path) in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("prompts, message", [
    ("The if", "prompts: a non-empty list of prompts, got 'The if'"),
    ([], "prompts: a non-empty list of prompts, got []"),
    (["ok", None], "prompt: text, token ids (integers) or chat messages, got None"),
    (["ok", ""], "prompt 2 of 2: --prompt: must not be empty"),
])
def test_the_api_batch_door_is_one_line(default_build, prompts, message):
    import sdllm

    with pytest.raises(SdllmError) as e:
        sdllm.load_build(default_build).run_batch(prompts, 4, backend="fast")
    assert str(e.value) == message


@pytest.mark.parametrize("lengths, n_new, period, interval", [([3, 1, 5], 4, 10, 3), ([2] * 6, 3, 10, 4), ([7], 5, 9, 9)])
def test_a_batch_timeline_keeps_the_pipeline_safe(lengths, n_new, period, interval):
    """Every two positions enter an interval apart (no core works on two at once); a generated one a
    period after its own sequence's previous (its logits); a batch of one is the one-prompt timeline."""
    class S:
        pass

    s = S()
    s.period, s.interval = period, interval
    t = Timeline.batch(s, lengths, n_new)
    assert t.positions == sum(n + n_new - 1 for n in lengths)
    order = np.sort(t.starts)
    assert order[0] == 0 and (np.diff(order) >= interval).all()
    for first, stop in t.sequences:
        n = lengths[[f for f, _ in t.sequences].index(first)]
        assert (t.first[first:stop] == first).all() and t.known[first:stop].tolist() == [i < n for i in range(stop - first)]
        gen = np.arange(first + n, stop)
        assert (t.starts[gen] - t.starts[gen - 1] >= period).all()
    one = Timeline.batch(s, lengths[:1], n_new)
    assert np.array_equal(one.starts, Timeline.of(s, lengths[0], lengths[0] + n_new - 1).starts)


def test_the_mapping_report_s_full_rate_batch_is_what_the_timeline_keeps_at_a_period(default_build):
    """The report's `batch_at_full_rate` sequences generate a token a period each, side by side;
    one more and some wait longer."""
    import json

    with open(os.path.join(default_build, "report.json"), encoding="utf-8") as f:
        n = json.load(f)["batch_at_full_rate"]
    s = load_build(default_build).schedule
    assert n == s.period // s.interval >= 2

    def widest_gap(size: int) -> int:
        t = Timeline.batch(s, [1] * size, 4)
        return max(int(np.diff(t.starts[a:b]).max()) for a, b in t.sequences)

    assert widest_gap(n) == s.period and widest_gap(n + 1) > s.period
