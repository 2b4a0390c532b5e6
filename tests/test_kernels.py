"""The fused kernels equal their numpy definitions (`fixedpoint`) bit for bit: on random rows of
every size class, on the edges of the rounding (exact halves, negative values, ties in the order
statistic) and on overflow."""

import numpy as np
import pytest

from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer import kernels as kx
from sdllm.models.integer.units import causal

ROWS = (1, 3, kx.PARALLEL_ROWS + 5)  # serial and parallel paths


def _same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and np.array_equal(a, b), (a.shape, b.shape, np.argwhere(a != b)[:5])


def _agree(kernel, spec):
    """Both give the same integers, or both overflow."""
    try:
        expected = spec()
    except OverflowError:
        with pytest.raises(OverflowError):
            kernel()
        return
    _same(kernel(), expected)


def _values(rng, shape, bits):
    return rng.integers(-(1 << bits), 1 << bits, shape)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n, k", [(64, 63), (576, 570), (1536, 1380), (40, 0)])
def test_quantize_and_norm_quantize(rows, n, k):
    rng = np.random.default_rng(n + rows)
    for bits, q_max, theta in ((20, 7, 0), (30, 127, 2), (3, 7, 1)):
        x = _values(rng, (rows, n), bits)
        x[0, : n // 4] = 0  # ties at zero
        _same(kx.quantize(x, k, q_max, theta), fx.quantize(x, k, q_max, theta))
        args = (x, k, q_max, theta, 41)
        _agree(lambda a=args: kx.norm_quantize(*a), lambda a=args: fx.norm_quantize(*a))
    zeros = np.zeros((rows, n), np.int64)
    _same(kx.norm_quantize(zeros, k, 7, 0, 0), fx.norm_quantize(zeros, k, 7, 0, 0))


def test_exact_halves_round_away_from_zero():
    x = np.array([[-3, -1, 1, 3, 5, -5, 2, 7]])  # x·Q/m lands on .5 for odd x with Q = 1, m = 2
    for k in range(8):
        _same(kx.quantize(x, k, 1, 0), fx.quantize(x, k, 1, 0))
    acc = np.arange(-300, 300).reshape(6, 100) * 4097
    _same(kx.dequant(acc, np.full(100, 1 << 23), np.full(6, 3), 7), fx.dequant(acc, np.full(100, 1 << 23), np.full(6, 3), 7))


@pytest.mark.parametrize("rows", ROWS)
def test_dequantisers_rope_silu_and_static_quantiser(rows):
    rng = np.random.default_rng(rows)
    acc = _values(rng, (rows, 960), 16)
    scale = rng.integers(1, 1 << 22, 960)
    ratio, m = rng.integers(1, 1 << 20, rows), rng.integers(1, 1 << 20, rows)
    _same(kx.dequant_normed(acc, scale, ratio, 7), fx.dequant_normed(acc, scale, ratio, 7))
    _same(kx.dequant(acc, scale, m, 127), fx.dequant(acc, scale, m, 127))
    x = _values(rng, (rows, 9, 64), 18)
    cos, sin = rng.integers(-(1 << 14), 1 << 14, (2, rows, 1, 32))
    _same(kx.rope(x, cos, sin), fx.rope(x, cos, sin))
    gate, up = _values(rng, (2, rows, 1536), 17)
    _same(kx.silu_mul(gate, up), fx.silu_mul(gate, up))
    v = _values(rng, (rows, 3, 64), 16)
    v_range = rng.integers(1, 1 << 15, (3, 64))
    _same(kx.quantize_static(v, v_range, 127), fx.quantize_static(v, v_range, 127))


def test_the_exponential_on_every_input_until_it_vanishes():
    """The kernels' branch-free i-exp (`iexp_abs`) against the definition's on every gate value
    from past where exp underflows to zero on one side to the other (serial and parallel rows),
    and on score differences as large as the window's."""
    reach = (fx._EXP_MAX_SHIFT + 2) * fx._LN2
    gate = np.arange(-reach, reach + 1, dtype=np.int64)
    up = np.full_like(gate, 1 << fx.FRAC)
    for rows in (1, kx.PARALLEL_ROWS):
        g, u = gate[: len(gate) // rows * rows].reshape(rows, -1), up[: len(gate) // rows * rows].reshape(rows, -1)
        _same(kx.silu_mul(g, u), fx.silu_mul(g, u))
    scores = np.concatenate([np.zeros(1, np.int64), -np.arange(0, 3 * reach, 7), [-(1 << 40)]])[None]
    _same(kx.softmax_quantize(scores, 127, 0), fx.softmax_quantize(scores, 127, 0))


@pytest.mark.parametrize("rows", ROWS)
def test_attention_scores_softmax_and_output(rows):
    rng = np.random.default_rng(7 + rows)
    acc = _values(rng, (rows, 9, 256), 14)
    q_scale, k_scale = rng.integers(1, 1 << 16, (rows, 9)), rng.integers(1, 1 << 16, (9, 256))
    _same(kx.score_values(acc, q_scale, k_scale, 7, 127), fx.score_values(acc, q_scale, k_scale, 7, 127))
    scores = _values(rng, (rows, 9, 256), 16)
    pos = rng.integers(0, 256, rows)
    for q_max, theta in ((7, 0), (127, 3)):
        _same(kx.softmax_quantize(scores, q_max, theta, causal(256, pos)), fx.softmax_quantize(scores, q_max, theta, causal(256, pos)))
    _same(kx.softmax_quantize(scores, 7, 0), fx.softmax_quantize(scores, 7, 0))
    pv = _values(rng, (rows, 9, 64), 20)
    v_range, top, total = rng.integers(1, 1 << 15, (9, 64)), rng.integers(1, 1 << 15, (rows, 9)), rng.integers(1, 1 << 22, (rows, 9))
    _same(kx.attention_output(pv, v_range, top, total, 127, 127), fx.attention_output(pv, v_range, top, total, 127, 127))


@pytest.mark.parametrize("block, shift", [(64, 3), (512, 5), (1, 0), (2, 1), (16, 2), (128, 3), (256, 4)])
def test_hadamard(block, shift):
    rng = np.random.default_rng(block)
    for rows in ROWS:
        x = _values(rng, (rows, 1536), 24)
        _same(kx.hadamard(x, block, shift), fx.hadamard(x, block, shift))
    big = _values(rng, (2, 1024), 50)  # past float64's exact products: butterflies in both
    _same(kx.hadamard(big, 512, 5), fx.hadamard(big, 512, 5))


def test_overflow_is_an_error_as_in_the_definitions():
    x = np.array([[1 << 60, 3]])
    with pytest.raises(OverflowError):
        fx.quantize(x, 0, 7, 0)
    with pytest.raises(OverflowError):
        kx.quantize(x, 0, 7, 0)
    args = (np.array([[1 << 40]]), np.array([(1 << 22) + 1]), np.array([1]), 7)  # acc·scale just past 2**62
    for f in (fx.dequant, kx.dequant):
        with pytest.raises(OverflowError):
            f(*args)


def test_the_reference_on_kernels_equals_the_reference_on_the_definitions(default_model):
    from sdllm.models.integer.reference import IntegerSDLLM

    tokens = list(b"The if statement is used for conditional execution")
    fast_logits, fast_spikes = IntegerSDLLM(default_model).forward(tokens)
    spec_logits, spec_spikes = IntegerSDLLM(default_model, ops=fx).forward(tokens)
    assert np.array_equal(fast_logits, spec_logits)
    assert all(np.array_equal(fast_spikes[k], spec_spikes[k]) for k in spec_spikes)


def test_product_bounds_are_tight_and_choose_the_exact_type():
    from sdllm.models.integer.products import ExactProduct, bound

    # the worst case: q = ±Q with the signs of the row with the largest Σ|w| reaches the bound
    rng = np.random.default_rng(0)
    w = rng.integers(-7, 8, (5, 1536))
    w[3] = 7 * np.sign(rng.standard_normal(1536)).astype(np.int64)
    q = (7 * np.sign(w[3])).astype(np.int64)
    b = bound(w, 7)
    assert b == 7 * 7 * 1536 and int((w @ q)[3]) == b
    p = ExactProduct(w, 7)
    assert p.kind == "int8" and np.array_equal(p(q[None]), (w @ q)[None])
    assert ExactProduct(w, 7, int8=False).kind == "float32"
    # a fan-in whose bound passes 2**24: float32 would round (shown), so float64 is chosen
    n = (1 << 24) // (127 * 127) + 1
    wide = np.full((1, n), 127, np.int64)
    wide[0, -1] = 126
    x = np.full((1, n), 127, np.int64)
    x[0, -2] = 126
    exact = int((wide @ x[0])[0])
    assert bound(wide, 127) >= 1 << 24 and exact > 1 << 24
    assert int((x.astype(np.float32) @ wide.T.astype(np.float32))[0, 0]) != exact  # float32 is not exact here
    wp = ExactProduct(wide, 127)
    assert wp.kind == "float64" and int(wp(x)[0, 0]) == exact
    with pytest.raises(OverflowError, match="exceeds float64's exact range"):
        ExactProduct(np.full((1, 4), 1 << 40, np.int64), 1 << 12)
