import numpy as np
import pytest

from sdllm.codes import CODES, decode, sops, timesteps_table

BITS = (2, 3, 4, 6, 8)


def qmax(bits):
    return (1 << (bits - 1)) - 1


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name", sorted(CODES))
def test_every_code_is_exact(name, bits):
    code = CODES[name]
    q_max = qmax(bits)
    every = np.arange(-q_max, q_max + 1)
    assert np.array_equal(decode(code.encode(every, bits), code, bits), every)
    rng = np.random.default_rng(bits)
    q = rng.integers(-q_max, q_max + 1, (3, 5, 40))
    train = code.encode(q, bits)
    assert train.shape == (code.timesteps(bits), *q.shape)
    assert np.array_equal(decode(train, code, bits), q)
    # the synaptic view: Σ_t scale_t · W·s_t − offset · W·1 = W·q
    w = rng.integers(-7, 8, (40, 12))
    acc = sum(s * (x @ w) for s, x in zip(code.step_scale(bits), train)) - code.offset(bits) * w.sum(0)
    assert np.array_equal(acc, q @ w)
    # spikes = non-zero events of the train; SOPs = spikes × fan-out
    events = (train != 0).sum(0)
    assert np.array_equal(code.spikes(q, bits), events)
    fanout = rng.integers(0, 9, 40)
    assert sops(q, fanout, code, bits) == int((events * fanout).sum())


@pytest.mark.parametrize("bits", BITS)
def test_what_each_code_sends(bits):
    q_max = qmax(bits)
    q = np.arange(-q_max, q_max + 1)
    assert set(np.unique(CODES["ternary"].encode(q, bits))) <= {-1, 0, 1}
    assert set(np.unique(CODES["unsigned"].encode(q, bits))) <= {0, 1}
    assert set(np.unique(CODES["bitplane"].encode(q, bits))) <= {-1, 0, 1}
    t = {name: code.timesteps(bits) for name, code in CODES.items()}
    assert t == {"ternary": q_max, "unsigned": 2 * q_max, "bitplane": bits - 1, "naf": bits, "graded": 1}
    assert 2 * t["ternary"] == t["unsigned"]
    assert np.array_equal(CODES["ternary"].spikes(q, bits), np.abs(q))
    assert np.array_equal(CODES["unsigned"].spikes(q, bits), q + q_max)
    assert CODES["bitplane"].spikes(q, bits).tolist() == [bin(abs(int(v))).count("1") for v in q]
    assert np.array_equal(CODES["graded"].spikes(q, bits), (q != 0).astype(int))
    assert np.array_equal(CODES["bitplane"].step_scale(bits), 2 ** np.arange(bits - 2, -1, -1))
    assert [c.offset(bits) for c in CODES.values()] == [0, q_max, 0, 0, 0]
    naf = CODES["naf"].encode(q, bits)
    assert set(np.unique(naf)) <= {-1, 0, 1} and not ((naf[1:] != 0) & (naf[:-1] != 0)).any()  # non-adjacent
    assert (CODES["naf"].spikes(q, bits) <= CODES["bitplane"].spikes(q, bits)).all()


def test_ternary_sends_fewer_sops_than_unsigned():
    q = np.array([[0, 0, 3, -7, 1]])
    fanout = np.array([10, 10, 10, 10, 10])
    assert sops(q, fanout, CODES["ternary"], 4) == 110
    assert sops(q, fanout, CODES["unsigned"], 4) == 10 * (7 + 7 + 10 + 0 + 8)
    assert sops(q, fanout, CODES["bitplane"], 4) == 10 * (2 + 3 + 1)
    assert sops(q, fanout, CODES["graded"], 4) == 30
    with pytest.raises(ValueError, match="fanout"):
        sops(q, fanout[:3], CODES["ternary"], 4)


def test_timesteps_table():
    table = timesteps_table((2, 8))
    assert table["ternary"] == {2: (1, True), 8: (127, True)}
    assert table["unsigned"][8] == (254, True)
    assert table["bitplane"][8] == (7, True)
    assert table["graded"][8] == (1, False)


@pytest.mark.parametrize("name", sorted(CODES))
def test_out_of_range_values_are_refused(name):
    code = CODES[name]
    with pytest.raises(ValueError, match=rf"{name} code: \|q\| must be at most 7 for 4-bit values, got -9"):
        code.encode(np.array([1, -9]), 4)
    with pytest.raises(ValueError, match=r"at most 1 for 2-bit values, got 2"):
        code.spikes(np.array([[0], [2]]), 2)
    with pytest.raises(ValueError, match=rf"{name} code: bits must be within 2..16, got 1"):
        code.timesteps(1)
    with pytest.raises(ValueError, match="got 17"):
        code.encode(np.array([0]), 17)
    with pytest.raises(TypeError, match="integer"):
        code.encode(np.array([0.5]), 4)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name", ["ternary", "bitplane"])
def test_a_core_accumulating_with_the_codes_radix_gets_w_times_q(name, bits):
    """What synapse cores do step by step: acc = radix · acc + W·s_t (bit planes most significant
    first: Horner's scheme), and the window leaves exactly W·q."""
    code = CODES[name]
    q_max = qmax(bits)
    rng = np.random.default_rng(bits)
    q = rng.integers(-q_max, q_max + 1, (7, 30))
    w = rng.integers(-7, 8, (30, 5))
    acc = np.zeros((7, 5), np.int64)
    for s in code.encode(q, bits):
        acc = code.radix * acc + s @ w
    assert np.array_equal(acc, q @ w)
    unsigned = rng.integers(0, q_max + 1, (7, 30))
    acc = np.zeros((7, 5), np.int64)
    for s in code.encode(unsigned, bits):
        assert s.min() >= 0
        acc = code.radix * acc + s @ w
    assert np.array_equal(acc, unsigned @ w)
