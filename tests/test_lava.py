"""The Lava run equals the integer reference bit for bit: logits, tokens, per-core SOPs, timesteps."""

from collections import defaultdict

import numpy as np
import pytest
from helpers import compile_split, write_hw

from sdllm.compiler.emit import emit
from sdllm.formats.build import read as load_build
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.runtime.fast import run_fast
from sdllm.runtime.lava_backend import run_lava
from sdllm.runtime.lockstep import run_lockstep


def spike_events(build, node, q):
    """Events per input in the code the build carries its stage's input in: the non-zero steps of
    the train the unit sends (|q| for ternary trains, the set bits of |q| for bit planes, the
    non-zero digits of q's non-adjacent form, one per non-zero q in a graded code)."""
    from sdllm import codes

    bits = build.quant.of_stage(node).bits
    train = codes.CODES[build.schedule.stages[node].code].encode(np.asarray(q, np.int64), bits)
    return (train != 0).sum(0)


def analytic_core_sops(build, spikes, pos):
    """Σ over each core's input spikes of the axon's non-zero fan-out, from the reference's spike
    counts; for a reduce core, the non-zero partial sums its stage's fan-in tiles send it."""
    out, partial_sums = {}, defaultdict(list)
    for c in build.cores:
        if c.type in ("host_io", "reduce"):
            continue
        if c.type == "neuron_unit":  # units have no synapses
            out[c.name] = 0
            continue
        q = np.asarray(spikes[c.node]).reshape(-1)
        if c.type == "synapse":
            w, x = c.weights(), q[c.params["axons"]]
            out[c.name] = int(spike_events(build, c.node, x) @ np.count_nonzero(w, axis=0))
            partial_sums[c.node].append((c.params["neurons"], w @ x))
        else:
            s = spike_events(build, c.node, q[c.params["axons"][: c.params["n_spike_axons"]]]).sum()
            out[c.name] = int(s) * ((pos + 1) if c.type == "kv_qk" else c.params["head_dim"])
    for c in build.cores:
        if c.type == "reduce":
            n = c.params["neurons"]
            out[c.name] = sum(int(np.count_nonzero(sums[np.isin(tile_n, n)])) for tile_n, sums in partial_sums[c.node])
    return out


def pipelined_steps(build, n_prompt: int, n_positions: int) -> int:
    """Steps until the last position's logits: the prompt's positions enter an interval apart,
    each generated one a period after the one before it."""
    s = build.schedule
    return (n_prompt - 1) * s.interval + (n_positions - n_prompt + 1) * s.period


def check_equal(build, model, prompt, n_new, result):
    ref = IntegerSDLLM(model)
    tokens, logits, spikes = ref.generate(prompt, n_new)
    assert result.tokens == tokens
    assert np.array_equal(result.logits, logits)
    assert result.timesteps == pipelined_steps(build, len(prompt), len(logits))
    for pos, sp in enumerate(spikes):
        expected = analytic_core_sops(build, sp, pos)
        assert {k: int(v[pos]) for k, v in result.core_sops.items()} == expected
        reduce = {c.name for c in build.cores if c.type == "reduce"}
        synaptic = sum(v for k, v in expected.items() if k not in reduce)
        assert synaptic == sum(ref.stage_sops(sp, pos, lambda node: build.schedule.stages[node].code).values())


@pytest.mark.parametrize("prompt", ["The if statement", "def f(x):", "import "])
def test_lava_equals_integer_reference(default_model, default_build, prompt):
    build = load_build(default_build)
    p = list(prompt.encode())
    check_equal(build, default_model, p, 4, run_lava(build, p, 4))


def test_multi_tile_build_on_lava_equals_reference(tiny_model, tmp_path):
    emit(compile_split(tiny_model, tmp_path), str(tmp_path / "b"))
    build = load_build(str(tmp_path / "b"))
    assert any(c.type == "kv_qk" and c.params["n_heads"] < 4 for c in build.cores), "expected KV cores split by heads"
    p = list(b"ab")
    check_equal(build, tiny_model, p, 5, run_lava(build, p, 5))


@pytest.mark.parametrize("code", ["auto", "paper"])
def test_a_pipelined_prompt_equals_one_position_at_a_time(tiny_model, tmp_path, code):
    """Layer pipelining changes when positions enter, not what any core computes: tokens, logits,
    per-core SOPs and traffic per position equal the unpipelined run's, on a build with reduce
    cores, split KV cores and spanning units; the prompt takes (n - 1) intervals and a period."""
    from sdllm.compiler import pipeline

    hw = write_hw(tmp_path, max_input_axons=24, synapse_memory_bits=8000)
    emit(pipeline.compile_model(tiny_model, hw, pipeline.passes(code=code)), str(tmp_path / "b"))
    build = load_build(str(tmp_path / "b"))
    assert any(c.type == "reduce" for c in build.cores) and build.schedule.interval < build.schedule.period
    p = list(b"if x is no")  # 10 tokens and 3 new: 12 of the tiny model's 16 positions
    piped, serial = run_lockstep(build, p, 3), run_lockstep(build, p, 3, pipelined=False)
    assert piped.tokens == serial.tokens and np.array_equal(piped.logits, serial.logits)
    assert {k: v.tolist() for k, v in piped.core_sops.items()} == {k: v.tolist() for k, v in serial.core_sops.items()}
    assert np.array_equal(piped.traffic, serial.traffic)
    assert piped.timesteps == (len(p) - 1) * build.schedule.interval + 3 * build.schedule.period
    assert serial.timesteps == (len(p) + 2) * build.schedule.period
    check_equal(build, tiny_model, p, 3, run_lava(build, p, 3, "chip"))


def test_lockstep_equals_lava(default_build):
    build = load_build(default_build)
    p = list(b"for x in")
    a, b = run_lava(build, p, 3), run_lockstep(build, p, 3)
    assert a.tokens == b.tokens and np.array_equal(a.logits, b.logits)
    assert {k: v.tolist() for k, v in a.core_sops.items()} == {k: v.tolist() for k, v in b.core_sops.items()}


def _same(a, b):
    assert a.tokens == b.tokens and np.array_equal(a.logits, b.logits) and a.timesteps == b.timesteps
    if a.traffic is not None and b.traffic is not None:
        assert np.array_equal(a.traffic, b.traffic)
    assert {k: v.tolist() for k, v in a.core_sops.items()} == {k: v.tolist() for k, v in b.core_sops.items()}


def compiled_runs_equal(model, out, prompt: bytes, n_new: int, code: str = "auto", lockstep: bool = False):
    """`model` compiled for loihi2 (its inputs in `code`) into `out`: its Lava run equals the integer
    reference (`check_equal`), and the fast executor's (and the lockstep's) equal Lava's. Returns the build."""
    from sdllm.compiler.pipeline import compile_model, passes

    emit(compile_model(model, "loihi2", passes(code=code)), str(out))
    build = load_build(str(out))
    ids = list(prompt)
    lava = run_lava(build, ids, n_new)
    check_equal(build, model, ids, n_new, lava)
    for run in (run_lockstep, run_fast) if lockstep else (run_fast,):
        _same(lava, run(build, ids, n_new))
    return build


def test_per_core_and_per_chip_lava_graphs_are_bit_identical(default_build):
    build = load_build(default_build)
    p = list(b"while ")
    _same(run_lava(build, p, 3, granularity="core"), run_lava(build, p, 3, granularity="chip"))


def test_multi_chip_build_per_chip_equals_reference(tiny_model, tmp_path):
    """Cores spread over several chips: on-chip spikes stay inside a chip's process, the rest
    crosses Lava ports between chip processes."""
    emit(compile_split(tiny_model, tmp_path, chip={"cores_per_chip": 16, "mesh": [4, 4]}, chips=16), str(tmp_path / "b"))
    build = load_build(str(tmp_path / "b"))
    assert len({c.chip for c in build.cores if c.chip >= 0}) > 2
    p = list(b"xy")
    result = run_lava(build, p, 4, granularity="chip")
    check_equal(build, tiny_model, p, 4, result)
    _same(result, run_lava(build, p, 4, granularity="core"))
    _same(result, run_lockstep(build, p, 4))
    assert (result.traffic[:, 2] > 0).all() and (result.traffic[:, 1] > 0).all()  # packets cross chips and hop


def test_fast_backend_equals_lava_and_reference(default_model, default_build, tiny_model, tmp_path):
    build = load_build(default_build)
    p = list(b"The if")
    fast = run_fast(build, p, 4)
    check_equal(build, default_model, p, 4, fast)
    _same(fast, run_lava(build, p, 4, granularity="chip"))
    assert fast.traffic is None
    emit(compile_split(tiny_model, tmp_path), str(tmp_path / "b"))
    split = load_build(str(tmp_path / "b"))
    assert any(c.type == "reduce" for c in split.cores)
    result = run_fast(split, list(b"ab"), 5)
    check_equal(split, tiny_model, list(b"ab"), 5, result)
    # the fast executor runs the build's own tables: a misrouted partial sum changes its logits
    core = next(c for c in split.cores if c.type == "synapse" and any(split.cores[d].type == "reduce" for d, _, _ in c.routes))
    dest, src, dst = core.routes[0]
    core.routes[0] = (dest, src, np.roll(dst, 1))
    assert not np.array_equal(run_fast(split, list(b"ab"), 5).logits, result.logits)


@pytest.mark.parametrize("prompt_len, n_new", [(1, 6), (23, 4), (60, 3)])
def test_fast_generation_with_its_kv_cache_equals_lockstep_and_reference(default_model, default_build, prompt_len, n_new):
    """Prefill a window at once, then one token at a time (the attention products stop at the
    last position attended): the same tokens, logits and per-core SOPs as stepping every core."""
    build = load_build(default_build)
    p = list((b"The if statement is used for conditional execution; the while loop repeats." * 2)[:prompt_len])
    fast = run_fast(build, p, n_new)
    check_equal(build, default_model, p, n_new, fast)
    _same(fast, run_lockstep(build, p, n_new))
