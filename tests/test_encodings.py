import numpy as np
import pytest

from sdllm.models.encodings import CODES, decode, sops

BITS = (2, 3, 4, 6, 8)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("name", sorted(CODES))
def test_every_code_is_exact(name, bits):
    code = CODES[name]
    q_max = (1 << (bits - 1)) - 1
    every = np.arange(-q_max, q_max + 1)
    assert np.array_equal(decode(code.encode(every, bits), code, bits), every)
    rng = np.random.default_rng(bits)
    q = rng.integers(-q_max, q_max + 1, (5, 40))
    assert np.array_equal(decode(code.encode(q, bits), code, bits), q)
    # the synaptic view: Σ_t scale_t · W·s_t − offset · W·1 = W·q
    w = rng.integers(-7, 8, (40, 12))
    train = code.encode(q, bits)
    acc = sum(s * (x @ w) for s, x in zip(code.step_scale(bits), train)) - code.offset(bits) * w.sum(0)
    assert np.array_equal(acc, q @ w)
    assert train.shape[0] == code.timesteps(bits)
    # spikes = non-zero events of the train; SOPs = spikes x fan-out
    assert np.array_equal(code.spikes(q, bits), (train != 0).sum(0))
    fanout = rng.integers(0, 9, 40)
    assert sops(q, fanout, code, bits) == int(((train != 0).sum(0) * fanout).sum())


@pytest.mark.parametrize("bits", BITS)
def test_what_each_code_sends(bits):
    q_max = (1 << (bits - 1)) - 1
    q = np.arange(-q_max, q_max + 1)
    assert set(np.unique(CODES["ternary"].encode(q, bits))) <= {-1, 0, 1}
    assert set(np.unique(CODES["unsigned"].encode(q, bits))) <= {0, 1}
    assert set(np.unique(CODES["bitplane"].encode(q, bits))) <= {-1, 0, 1}
    t = {name: code.timesteps(bits) for name, code in CODES.items()}
    assert t == {"ternary": q_max, "unsigned": 2 * q_max, "bitplane": bits - 1, "graded": 1}
    assert np.array_equal(CODES["ternary"].spikes(q, bits), np.abs(q))
    assert np.array_equal(CODES["unsigned"].spikes(q, bits), q + q_max)
    assert CODES["bitplane"].spikes(q, bits).tolist() == [bin(abs(int(v))).count("1") for v in q]
    assert not CODES["graded"].adds_only and CODES["ternary"].adds_only


@pytest.mark.parametrize("name", sorted(CODES))
def test_out_of_range_values_are_refused(name):
    with pytest.raises(ValueError, match=r"at most 7 for 4-bit values, got 9"):
        CODES[name].encode(np.array([1, -9]), 4)
    with pytest.raises(ValueError, match="2..16, got 1"):
        CODES[name].timesteps(1)
