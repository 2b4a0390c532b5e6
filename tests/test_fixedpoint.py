import math

import numpy as np
import pytest

from sdllm.models.integer import fixedpoint as fx


def test_round_div_rounds_half_away_from_zero():
    n = np.array([5, -5, 4, -4, 6, -6, 0])
    assert fx.round_div(n, 2).tolist() == [3, -3, 2, -2, 3, -3, 0]
    assert fx.round_div(n, 4).tolist() == [1, -1, 1, -1, 2, -2, 0]


def test_round_div_by_shifts_and_by_division_agree_with_exact_rationals():
    from fractions import Fraction

    rng = np.random.default_rng(3)
    n = np.concatenate([rng.integers(-2**40, 2**40, 3000), np.arange(-70, 70)])
    for d in (1, 2, 8, 1 << 24, 3, 7, 1000):
        expected = [int(math.copysign(math.floor(abs(Fraction(int(v), d)) + Fraction(1, 2)), v)) for v in n]
        assert fx.round_div(n, d).tolist() == expected, d
    d = rng.integers(1, 5000, len(n))  # per-element divisors
    assert fx.round_div(n, d).tolist() == [int(math.copysign(math.floor(abs(Fraction(int(a), int(b))) + Fraction(1, 2)), a))
                                           for a, b in zip(n, d)]


def test_isqrt_is_exact():
    rng = np.random.default_rng(0)
    n = np.concatenate([rng.integers(0, 2**52, 2000), np.arange(200), np.array([k * k for k in range(1, 200)]) - 1])
    assert fx.isqrt(n).tolist() == [math.isqrt(int(v)) for v in n]


def test_quantize_hits_the_range_and_the_dead_zone():
    x = np.array([[100, -50, 3, 0, -100]])
    q, m = fx.quantize(x, k=4, q_max=7, theta=0)
    assert m.tolist() == [100]
    assert q.tolist() == [[7, -4, 0, 0, -7]]
    q, _ = fx.quantize(x, k=4, q_max=7, theta=4)
    assert q.tolist() == [[7, 0, 0, 0, -7]]


def test_iexp_tracks_exp():
    x = np.arange(-8 << fx.FRAC, 1, 97)
    got = fx.iexp(x) / (1 << fx.EXP_FRAC)
    assert np.max(np.abs(got - np.exp(x / (1 << fx.FRAC)))) < 0.01


def test_silu_mul_tracks_float():
    g = np.arange(-6 << fx.FRAC, 6 << fx.FRAC, 123)
    up = np.full_like(g, 1 << fx.FRAC)
    got = fx.silu_mul(g, up) / (1 << fx.FRAC)
    z = g / (1 << fx.FRAC)
    assert np.max(np.abs(got - z / (1 + np.exp(-z)))) < 0.02


def test_float_nonlinearities_compute_the_same_functions():
    from sdllm.models.evaluation import float_ops

    rng = np.random.default_rng(1)
    x = rng.integers(-(8 << fx.FRAC), 8 << fx.FRAC, (6, 64))
    q_i, r_i = fx.norm_quantize(x, 60, 7, 0, 1)
    q_f, r_f = float_ops.norm_quantize(x, 60, 7, 0, 1)
    assert np.array_equal(q_i, q_f) and np.all(np.abs(r_i - r_f) <= np.maximum(r_f >> 12, 2))
    scores = rng.integers(-(6 << fx.FRAC), 6 << fx.FRAC, (3, 4, 20))
    causal = np.arange(20) <= np.arange(3)[:, None, None] + 10
    p_i, top_i, tot_i = fx.softmax_quantize(scores, 7, 0, causal)
    p_f, top_f, tot_f = float_ops.softmax_quantize(scores, 7, 0, causal)
    assert np.abs(p_i - p_f).max() <= 1 and np.all(p_f[~np.broadcast_to(causal, p_f.shape)] == 0)
    assert np.allclose(tot_i / top_i, tot_f / top_f, rtol=0.02)
    g, up = x[:, :32], x[:, 32:]
    assert np.abs(fx.silu_mul(g, up) - float_ops.silu_mul(g, up)).max() < 0.02 * np.abs(up).max()
    cos, sin = np.cos(np.arange(32) * 0.3), np.sin(np.arange(32) * 0.3)
    cos_fx, sin_fx = fx.to_fixed(cos, fx.TRIG_FRAC), fx.to_fixed(sin, fx.TRIG_FRAC)
    assert np.abs(fx.rope(x, cos_fx, sin_fx) - float_ops.rope(x, cos, sin)).max() <= np.abs(x).max() >> 12
    with pytest.raises(ValueError, match="unknown"):
        float_ops.FloatNonlinearities(["gelu"])
