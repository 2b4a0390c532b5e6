"""The compiled network as a Lava Process (`sdllm.SDLLM`), wired to Lava's stock ring-buffer
source and sinks, run with RunSteps and RunContinuous on Loihi2SimCfg: tokens, logits and per-core
SOPs equal the integer reference's (and the lockstep simulator's) bit for bit."""

import pathlib
import re
import time

import numpy as np
import pytest
from helpers import compile_split
from lava.magma.core.run_conditions import RunContinuous, RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io import sink, source

import sdllm
from sdllm.compiler.emit import emit
from sdllm.formats.build import read as load_build
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.runtime.lockstep import run_lockstep
from sdllm.runtime.sampling import Sampler

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "lava_process.md"


def _wire(net, prompt, n_positions, buffer):
    """A source with the prompt's tokens at their periods' first steps (-1 after), sinks for both outputs."""
    P = net.period
    ids = np.full((1, buffer), -1)
    ids[0, : len(prompt) * P : P] = prompt
    src = source.RingBuffer(data=ids)
    tokens = sink.RingBuffer(shape=(1,), buffer=buffer)
    logits = sink.RingBuffer(shape=(net.logits_out.shape[0],), buffer=buffer)
    src.s_out.connect(net.token_in)
    net.token_out.connect(tokens.a_in)
    net.logits_out.connect(logits.a_in)
    return tokens, logits


@pytest.mark.parametrize("granularity", ["chip", "core"])
def test_process_with_stock_source_and_sinks_equals_the_reference(default_model, default_build, granularity):
    prompt, n_new = list(b"The if"), 5
    n = len(prompt) + n_new - 1
    net = sdllm.SDLLM(build=default_build, granularity=granularity)
    P = net.period
    tokens_sink, logits_sink = _wire(net, prompt, n, n * P + 1)
    try:
        net.run(condition=RunSteps(num_steps=n * P + 1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        chosen = tokens_sink.data.get()[0].astype(np.int64)
        logits = logits_sink.data.get().astype(np.int64)
        sops = net.core_sops()
    finally:
        net.stop()
    ref_tokens, ref_logits, _ = IntegerSDLLM(default_model).generate(prompt, n_new)
    assert np.array_equal(logits[:, P::P].T, ref_logits)  # position i's logits from step (i+1)·P on
    assert np.array_equal(logits[:, P + P // 2::P].T, ref_logits[:-1])  # ... held through the period
    assert chosen[:P].tolist() == [-1] * P
    # teacher-forced positions: the greedy choice of each; from the prompt's last token on: the continuation
    assert chosen[P::P].tolist() == [int(np.argmax(row)) for row in ref_logits]
    assert chosen[len(prompt) * P::P].tolist() == ref_tokens[len(prompt):]
    lockstep = run_lockstep(load_build(default_build), prompt, n_new)
    assert {k: v[:n].tolist() for k, v in sops.items()} == {k: v.tolist() for k, v in lockstep.core_sops.items()}


def test_process_samples_like_the_other_backends_on_a_multi_chip_build(tiny_model, tmp_path):
    emit(compile_split(tiny_model, tmp_path, chip={"cores_per_chip": 16, "mesh": [4, 4]}, chips=16), str(tmp_path / "b"))
    build = load_build(str(tmp_path / "b"))
    prompt, n_new = list(b"xy"), 5
    n = len(prompt) + n_new - 1
    sampler = Sampler(temperature=1.5, top_k=50, seed=4)
    net = sdllm.load_build(build.path).process(temperature=1.5, top_k=50, seed=4, n_positions=n)
    P = net.period
    tokens_sink, logits_sink = _wire(net, prompt, n, n * P + 1)
    try:
        net.run(condition=RunSteps(num_steps=n * P + 1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        chosen = tokens_sink.data.get()[0].astype(np.int64)
        logits = logits_sink.data.get().astype(np.int64)
    finally:
        net.stop()
    ref_tokens, ref_logits, _ = IntegerSDLLM(tiny_model).generate(prompt, n_new, choose=sampler)
    assert np.array_equal(logits[:, P::P].T, ref_logits)
    assert chosen[len(prompt) * P::P].tolist() == ref_tokens[len(prompt):]
    assert len({c.chip for c in build.cores if c.chip >= 0}) > 2


def test_run_continuous_then_pause_reads_what_ran_and_idles_after_its_positions(default_model, default_build):
    prompt, n_positions = list(b"import "), 9
    net = sdllm.SDLLM(build=default_build, n_positions=n_positions)
    P = net.period
    buffer = 60 * n_positions * P  # far more steps than the test lets it run: nothing wraps around
    tokens_sink, _ = _wire(net, prompt, n_positions, buffer)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    try:
        net.run(condition=RunContinuous(), run_cfg=cfg)
        deadline = time.time() + 120
        while True:
            time.sleep(1.0)
            net.pause()
            sops = net.core_sops()
            last_token_out = tokens_sink.data.get()[0][n_positions * P] != 0  # the host's choice after the last position
            if all(v[n_positions - 1] > 0 for k, v in sops.items() if "unit" not in k) and last_token_out \
                    or time.time() > deadline:
                break
            net.run(condition=RunContinuous(), run_cfg=cfg)
        chosen = tokens_sink.data.get()[0].astype(np.int64)
    finally:
        net.stop()
    ref_tokens, _, _ = IntegerSDLLM(default_model).generate(prompt, n_positions - len(prompt) + 1)
    assert chosen[len(prompt) * P:(n_positions + 1) * P:P].tolist() == ref_tokens[len(prompt):]
    held = chosen[(n_positions + 1) * P:]
    assert len(held) and (held[held != 0] == ref_tokens[-1]).all()  # idle: the last choice held (0: not yet run)
    lockstep = run_lockstep(load_build(default_build), prompt, n_positions - len(prompt) + 1)
    assert {k: v.tolist() for k, v in sops.items()} == {k: v.tolist() for k, v in lockstep.core_sops.items()}


def test_the_documented_example_runs(default_model, default_build):
    """docs/lava_process.md's example, on the test build: the continuation it prints is the reference's."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S).group(1)
    assert 'BUILD = "out/build"' in code
    scope = {}
    exec(compile(code.replace('BUILD = "out/build"', f"BUILD = {default_build!r}"), str(DOCS), "exec"), scope)
    ref_tokens, ref_logits, _ = IntegerSDLLM(default_model).generate(list(b"The if statement"), 8)
    assert scope["generated"].tolist() == ref_tokens[len(b"The if statement"):]
    assert np.array_equal(scope["logits"], ref_logits)
    assert set(scope["sops"]) == {c.name for c in load_build(default_build).cores if c.type != "host_io"}
