"""Generation: sampling is a pure function of (logits row, position, seed), so Lava, lockstep, fast
and the integer reference pick the same tokens; a run stops after the end-of-sequence token and
hands each token over as it is produced."""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_lava import pipelined_steps

from sdllm.errors import SdllmError
from sdllm.formats.build import read as load_build
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.runtime.fast import run_fast
from sdllm.runtime.lava_backend import run_lava
from sdllm.runtime.lockstep import run_lockstep
from sdllm.runtime.sampling import Sampler

BIN = os.path.dirname(sys.executable)
BACKENDS = {"lava": lambda *a, **k: run_lava(*a, granularity="chip", **k), "lockstep": run_lockstep, "fast": run_fast}


def test_sampler_is_a_pure_function_of_row_position_and_seed():
    rng = np.random.default_rng(0)
    row = rng.integers(-40000, 40000, 256)
    s = Sampler(temperature=1.0, seed=5)
    draws = [s(row, p) for p in range(200)]
    assert draws == [Sampler(temperature=1.0, seed=5)(row.copy(), p) for p in range(200)]
    assert draws != [Sampler(temperature=1.0, seed=6)(row, p) for p in range(200)]
    assert Sampler()(row, 3) == int(np.argmax(row)) == Sampler(temperature=2.0, top_k=1)(row, 3)
    assert Sampler(temperature=1.0, top_p=1e-9)(row, 3) == int(np.argmax(row))  # the nucleus is the top token alone
    top3 = set(np.argsort(-row)[:3].tolist())
    assert {Sampler(temperature=5.0, top_k=3, seed=1)(row, p) for p in range(100)} == top3


def test_sampled_frequencies_follow_the_softmax():
    """Logits in FRAC fixed point (x 4096): three tokens at 0, -ln 2, -ln 4 nats -> 4/7, 2/7, 1/7."""
    row = np.full(8, -10**7)
    row[[2, 5, 7]] = [0, round(-np.log(2) * 4096), round(-np.log(4) * 4096)]
    counts = np.bincount([Sampler(temperature=1.0, seed=9)(row, p) for p in range(7000)], minlength=8)
    assert np.allclose(counts[[2, 5, 7]] / 7000, [4 / 7, 2 / 7, 1 / 7], atol=0.02)
    assert counts.sum() == counts[[2, 5, 7]].sum()


@pytest.mark.parametrize("bad, message", [(dict(temperature=-1), "--temperature"), (dict(top_k=-2), "--top-k"),
                                          (dict(top_p=0.0), "--top-p"), (dict(seed=-1), "--seed")])
def test_bad_sampling_options_are_one_line(bad, message):
    with pytest.raises(SdllmError, match=message):
        Sampler(**bad)


def test_sampling_gives_the_same_tokens_on_every_backend_and_the_reference(default_model, default_build):
    build = load_build(default_build)
    prompt = list(b"The if")
    greedy, _, _ = IntegerSDLLM(default_model).generate(prompt, 6)
    samplers = [Sampler(temperature=0.9, top_k=40, top_p=0.95, seed=seed) for seed in range(7, 13)]
    runs = [IntegerSDLLM(default_model).generate(prompt, 6, choose=s)[:2] for s in samplers]
    assert len({tuple(tokens) for tokens, _ in runs}) > 1  # the seed matters
    sampler, (tokens, logits) = next((s, r) for s, r in zip(samplers, runs) if r[0] != greedy)  # one that left greedy's path
    for name, run in BACKENDS.items():
        result = run(build, prompt, 6, sampler=sampler)
        assert result.tokens == tokens, name
        assert np.array_equal(result.logits, logits), name
    assert [run_fast(build, prompt, 6, sampler=s).tokens for s in samplers] == [t for t, _ in runs]


def test_generation_stops_after_the_end_of_sequence_token_on_every_backend(default_model, default_build):
    build = load_build(default_build)
    prompt = list(b"The if statement")
    full = run_fast(build, prompt, 8)
    generated = full.tokens[len(prompt):]
    k = next(i for i in range(2, 8) if generated[i] not in generated[:i])  # an id first generated at step k
    eos = generated[k]
    for name, run in BACKENDS.items():
        seen = []
        result = run(build, prompt, 8, eos_id=eos, on_token=seen.append)
        assert result.tokens == full.tokens[: len(prompt) + k + 1], name
        assert seen == generated[: k + 1], name  # streamed in order, the end-of-sequence token last
        assert np.array_equal(result.logits, full.logits[: len(prompt) + k]), name
        assert result.timesteps == pipelined_steps(build, len(prompt), len(prompt) + k), name
        assert all(len(v) == len(prompt) + k for v in result.core_sops.values()), name
    ref_tokens, _, _ = IntegerSDLLM(default_model).generate(prompt, 8, eos_id=eos)
    assert ref_tokens == full.tokens[: len(prompt) + k + 1]


def test_sdllm_run_samples_the_same_text_on_every_backend_and_streams_it(default_build):
    def run(backend):
        p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--prompt", "while ", "--max-new-tokens", "5",
                            "--temperature", "0.8", "--top-k", "20", "--seed", "3", "--backend", backend],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        return p.stdout.split("\n")[1]  # "generated: ..." streamed on one line

    lines = {backend: run(backend) for backend in ("lava", "fast")}
    assert lines["lava"] == lines["fast"] and lines["lava"].startswith("generated: ") and len(lines["lava"]) > 11


def test_interactive_mode_answers_each_line(default_build):
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, "--interactive", "--backend", "fast",
                        "--max-new-tokens", "4"], input="def f\nimport \n\n", capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.strip().splitlines()) == 2 and p.stderr.count("[4 tokens, ") == 2


@pytest.mark.parametrize("args, needle", [
    (["--chat", "--prompt", "x"], "--chat: this model has no chat template"),
    (["--chat", "--interactive"], "--chat: this model has no chat template"),
    (["--prompt", "x", "--top-p", "0"], "--top-p: a number in (0, 1], got 0.0"),
    (["--prompt", "x", "--interactive"], "give --prompt TEXT, --batch FILE or --interactive (one of them)"),
])
def test_bad_generation_requests_are_one_line_and_print_nothing_else(default_build, args, needle):
    p = subprocess.run([os.path.join(BIN, "sdllm-run"), default_build, *args], capture_output=True, text=True,
                       input="", timeout=600)
    assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
    assert p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr
