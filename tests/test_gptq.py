import torch

from sdllm.models import gptq


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
        rtn_int = torch.clamp(torch.round(w / scale[:, None]), -gptq.qmax(bits), gptq.qmax(bits))
        assert _output_error(x, w, w_int, scale) < 0.9 * _output_error(x, w, rtn_int, scale)


def test_weights_are_integers_in_range_and_scales_positive():
    w, x = _layer(1)
    for bits in (4, 8):
        for w_int, scale in (gptq.gptq(w, gptq.hessian(x), bits), gptq.rtn(w, bits), gptq.rtn(w, bits, search=True)):
            assert w_int.dtype == torch.int8
            assert w_int.abs().max() <= gptq.qmax(bits)
            assert (scale > 0).all()


def test_identity_hessian_reduces_gptq_to_round_to_nearest():
    w, _ = _layer(2)
    w_int, scale = gptq.gptq(w, torch.eye(w.shape[1], dtype=torch.float64), 4, act_order=False, damp=0.0)
    assert torch.equal(w_int, torch.clamp(torch.round(w / scale[:, None]), -7, 7).to(torch.int8))


def test_scale_search_never_worsens_the_weight_error():
    w, _ = _layer(3)
    plain_int, plain = gptq.rtn(w, 4)
    searched_int, searched = gptq.rtn(w, 4, search=True)
    err = lambda q, s: ((q.double() * s[:, None] - w) ** 2).sum(1)  # noqa: E731
    assert (err(searched_int, searched) <= err(plain_int, plain) + 1e-15).all()
    assert (err(searched_int, searched) < err(plain_int, plain)).any()


def test_gptq_is_deterministic_and_handles_dead_inputs():
    w, x = _layer(4)
    x[:, 10] = 0.0  # an input channel that never fires
    h = gptq.hessian(x)
    a, b = gptq.gptq(w, h, 4), gptq.gptq(w, h, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0][:, 10] == 0).all()
