import torch

from sdllm.models.conversion import gptq


def _layer(seed=0, out=64, inp=128, rows=512):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g, dtype=torch.float64) * 0.1
    mix = torch.randn(inp, inp, generator=g, dtype=torch.float64) / inp**0.5
    x = torch.randn(rows, inp, generator=g, dtype=torch.float64) @ mix  # correlated features
    x[:, :4] *= 8.0  # a few outlier channels, as in real activations
    return w, x


def _output_error(x, w, w_int, scale):
    return ((x @ w.T - x @ (w_int.double() * scale[:, None]).T) ** 2).sum().item()


def test_gptq_beats_round_to_nearest_on_the_layer_output():
    w, x = _layer()
    for bits in (4, 8):
        w_int, scale = gptq.gptq(w, gptq.hessian(x), bits)
        rtn_int, rtn_scale = gptq.rtn(w, bits, search=True)
        assert torch.equal(scale, rtn_scale)
        assert _output_error(x, w, w_int, scale) < 0.9 * _output_error(x, w, rtn_int, scale)


def test_weights_are_int8_in_range_and_scales_positive():
    w, x = _layer(1)
    w[5] = 0.0  # an all-zero output row still needs a usable scale
    for bits in (4, 8):
        for w_int, scale in (gptq.gptq(w, gptq.hessian(x), bits), gptq.rtn(w, bits), gptq.rtn(w, bits, search=True)):
            assert w_int.dtype == torch.int8 and w_int.shape == w.shape
            assert w_int.abs().max() == gptq.qmax(bits)  # within [-Q, Q], and the range is used
            assert scale.dtype == torch.float64 and scale.shape == (w.shape[0],) and (scale > 0).all()
            assert (w_int[5] == 0).all()


def test_identity_hessian_reduces_gptq_to_round_to_nearest():
    w, _ = _layer(2)
    for bits in (4, 8):
        w_int, scale = gptq.gptq(w, torch.eye(w.shape[1], dtype=torch.float64), bits, act_order=False)
        rtn_int, rtn_scale = gptq.rtn(w, bits, search=True)
        assert torch.equal(scale, rtn_scale) and torch.equal(w_int, rtn_int)


def test_scale_search_never_worsens_the_weight_error():
    w, _ = _layer(3)
    for bits in (4, 8):
        plain_int, plain = gptq.rtn(w, bits)
        searched_int, searched = gptq.rtn(w, bits, search=True)
        assert (searched <= plain).all()
        plain_err = ((plain_int.double() * plain[:, None] - w) ** 2).sum(1)
        searched_err = ((searched_int.double() * searched[:, None] - w) ** 2).sum(1)
        assert (searched_err <= plain_err).all()
        if bits == 4:  # at 8 bits clipping the largest weight rarely pays on a 2.5% grid
            assert (searched_err < 0.99 * plain_err).any()  # the search does pick a smaller α somewhere


def test_lazy_block_updates_do_not_change_the_result():
    w, x = _layer(4)
    h = gptq.hessian(x)
    one_block, _ = gptq.gptq(w, h, 4, block_size=w.shape[1])
    small_blocks, _ = gptq.gptq(w, h, 4, block_size=7)  # does not divide 128
    assert (one_block != small_blocks).float().mean() < 1e-3  # equal up to float ties


def test_gptq_is_deterministic_and_handles_dead_inputs():
    w, x = _layer(5)
    x[:, 10] = 0.0  # an input channel that never fires
    h = gptq.hessian(x)
    a, b = gptq.gptq(w, h, 4), gptq.gptq(w, h, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0][:, 10] == 0).all()
    assert torch.isfinite(a[1]).all()
