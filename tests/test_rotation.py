import numpy as np
import pytest
import torch

from sdllm.formats.model import LlamaConfig
from sdllm.models.conversion.fakequant import kth_smallest
from sdllm.models.conversion.rotation import (
    add_down_hadamard,
    add_qk_hadamard,
    fold_norms,
    head_hadamards,
    prepare,
    random_orthogonal,
    randomized_hadamard,
    rotate_heads,
    rotate_residual,
)
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.source.importers import default_float, load_float
from sdllm.models.source.llama import Llama, hadamard

ODD = LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=16)


def _random_model(cfg):
    torch.manual_seed(3)
    model = Llama(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        for layer in model.layers:  # gains far from 1, so folding them is exercised
            layer.attn_norm.weight.uniform_(0.2, 3.0)
            layer.mlp_norm.weight.uniform_(0.2, 3.0)
    return model.eval()


@pytest.mark.parametrize("which", ["default", "odd_dim"])
def test_rotated_model_gives_the_same_logits(which):
    model = load_float(default_float()) if which == "default" else _random_model(ODD)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(tokens)
        for step in (fold_norms(model), rotate_residual(fold_norms(model), randomized_hadamard(model.cfg.dim, 5)),
                     add_down_hadamard(fold_norms(model)), prepare(model, True, 5)) + (
                (add_qk_hadamard(fold_norms(model)),) if which == "default" else ()):
            got = step(tokens)
            assert (got - ref).abs().max() < 1e-4 * ref.abs().max()
    rotated = prepare(model, True, 5)
    assert rotated.cfg.down_hadamard == model.cfg.ffn_dim & -model.cfg.ffn_dim
    assert rotated.cfg.qk_hadamard == (which == "default")  # head_dim 32 is a power of two, 12 is not
    # the rotation really moved the weights: not an identity in disguise
    assert not torch.allclose(rotated.embed.weight, model.embed.weight, atol=1e-3)


def test_head_rotation_keeps_the_logits_and_is_seeded():
    """The per-head value rotation (fused into v_proj/o_proj; GQA, two query heads per KV head; q/k/v
    biases) changes no logit beyond float64 rounding, and a seed always gives the same model."""
    import copy
    import dataclasses

    cfg = dataclasses.replace(ODD, dim=64, attn_bias=True)  # head_dim 16: the online q/k Hadamard too
    model = _random_model(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    plain = prepare(model, True, 4, head_rotation=False).double()
    per_kv = [torch.stack([random_orthogonal(cfg.head_dim, 10 * i + j) for j in range(cfg.n_kv_heads)])
              for i in range(cfg.n_layers)]  # one matrix per KV head: the query heads' mapping to theirs
    with torch.no_grad():
        ref = plain(tokens)
        for heads in (head_hadamards(cfg, 4), per_kv):
            got = rotate_heads(copy.deepcopy(plain), heads)(tokens)
            assert (got - ref).abs().max() < 1e-9 * ref.abs().max()
        rotated = prepare(model, True, 4)  # float32, as conversion runs it
        assert (rotated(tokens) - model(tokens)).abs().max() < 1e-5 * ref.abs().max()
    plain = plain.float()
    for name in ("v_proj.weight", "v_proj.bias", "o_proj.weight"):  # it really moved the value weights
        assert not torch.allclose(rotated.layers[0].attn.get_parameter(name), plain.layers[0].attn.get_parameter(name))
    for name in ("q_proj.weight", "k_proj.weight"):  # and nothing else
        assert torch.equal(rotated.layers[0].attn.get_parameter(name), plain.layers[0].attn.get_parameter(name))
    again = prepare(model, True, 4)
    assert all(torch.equal(a, b) for a, b in zip(rotated.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(prepare(model, True, 5).layers[0].attn.v_proj.weight, rotated.layers[0].attn.v_proj.weight)
    h = head_hadamards(cfg, 4)
    assert len(h) == cfg.n_layers and not torch.equal(h[0], h[1])
    assert all(torch.allclose(r @ r.T, torch.eye(cfg.head_dim, dtype=r.dtype), atol=1e-12) for r in h)


@pytest.mark.parametrize("n", [64, 48, 576])
def test_randomized_hadamard_is_orthogonal_and_seeded(n):
    q = randomized_hadamard(n, 7)
    assert torch.allclose(q @ q.T, torch.eye(n, dtype=q.dtype), atol=1e-12)
    assert torch.equal(q, randomized_hadamard(n, 7))
    assert not torch.equal(q, randomized_hadamard(n, 8))


@pytest.mark.parametrize("bits", [20, 55])  # the float64 product, and butterflies past its exact range
def test_integer_hadamard_is_the_matrix_product_rounded(bits):
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << bits), 1 << bits, (5, 96))
    h = hadamard(32).numpy().astype(np.int64)
    exact = (x.reshape(5, 3, 32) @ h).reshape(5, 96)
    assert np.array_equal(fx.hadamard(x, 32, 0), exact)
    assert np.array_equal(fx.hadamard(x, 32, 3), fx.round_div(exact, 8))


def test_integer_forward_on_a_window_equals_token_by_token(default_model):
    ref = IntegerSDLLM(default_model)
    tokens = list(b"The if statement is used for conditional execution")
    block_logits, block_spikes = ref.forward(tokens)
    block_sops = ref.stage_sops(block_spikes, np.arange(len(tokens)))
    ref.reset()
    for pos, t in enumerate(tokens):
        logits, spikes = ref.step(t, pos)
        assert np.array_equal(logits, block_logits[pos])
        sops = ref.stage_sops(spikes, pos)
        for stage, v in spikes.items():
            assert np.array_equal(v, block_spikes[stage][pos]), stage
            assert sops[stage] == block_sops[stage][pos], stage
    # a second block continuing the first (a prompt, then more tokens) equals it too
    ref.reset()
    first, _ = ref.forward(tokens[:20])
    rest, _ = ref.forward(tokens[20:], start=20)
    assert np.array_equal(np.concatenate([first, rest]), block_logits)


def test_a_learned_rotation_keeps_the_float_logits_and_is_seeded(tmp_path):
    """A few Cayley SGD steps move R1 and R2 off the Hadamards, stay orthogonal, give the same
    rotations for a seed, and the model prepared with them has the float model's logits; a learned
    conversion stores them in model.pt, and the fake-quant model is prepared with them."""
    import dataclasses

    from sdllm.formats import model as modelformat
    from sdllm.formats.model import QuantSpec
    from sdllm.models.conversion.convert import convert
    from sdllm.models.conversion.fakequant import FakeQuantSDLLM
    from sdllm.models.conversion.learned_rotation import RotationTraining, learn_rotations
    from sdllm.models.conversion.rotation import prepare_as

    cfg = dataclasses.replace(ODD, dim=64, max_seq_len=24)  # head_dim 16
    model = _random_model(cfg)
    calib = torch.randint(0, cfg.vocab_size, (3, cfg.max_seq_len), generator=torch.Generator().manual_seed(2))
    spec = QuantSpec(rotation="learned", rotation_steps=4, seed=3)
    training = RotationTraining(steps=4, lr=0.5, windows_per_step=2)
    r1, r2, losses = learn_rotations(model, spec, calib, training)
    again = learn_rotations(model, spec, calib, training)
    assert torch.equal(r1, again[0]) and torch.equal(r2, again[1]) and losses == again[2]
    assert r1.shape == (cfg.dim, cfg.dim) and r2.shape == (cfg.n_layers, cfg.head_dim, cfg.head_dim)
    assert not torch.allclose(r1, randomized_hadamard(cfg.dim, 3), atol=1e-3)
    assert not torch.allclose(r2[0], head_hadamards(cfg, 3)[0], atol=1e-3)
    assert torch.allclose(r1 @ r1.T, torch.eye(cfg.dim, dtype=r1.dtype), atol=1e-10)
    assert torch.allclose(r2 @ r2.transpose(1, 2), torch.eye(cfg.head_dim, dtype=r2.dtype).expand_as(r2), atol=1e-10)
    tokens = calib[:, :-1]
    with torch.no_grad():
        ref = model(tokens)
        got = prepare_as(model, spec, {"residual": r1, "heads": r2})(tokens)
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()  # float32 rounding, as test_rotated_model_gives_the_same_logits

    converted = convert(model, spec, calib, {"type": "bytes"})
    assert set(converted.rotation) == {"residual", "heads"}
    modelformat.save(converted, str(tmp_path / "m.pt"))
    back = modelformat.load(str(tmp_path / "m.pt"))
    assert back.quant.rotation == "learned" and back.quant.rotation_steps == 4
    assert all(np.array_equal(back.rotation[k], converted.rotation[k]) for k in converted.rotation)
    fq = FakeQuantSDLLM(model, back)  # its embedding is the one conversion rotated and stored
    assert np.abs(fq.model.embed.weight.detach().double().numpy() * (1 << fx.FRAC) - back.embed_fx).max() <= 1

    # a learned rotation handed to another conversion is used as it is: the same integers as
    # learning it again, and without R2 where the spec has no value rotation
    given = convert(model, spec, calib, {"type": "bytes"}, rotation=back.rotation)
    assert all(np.array_equal(given.weight(n), converted.weight(n)) for n in converted.weights)
    residual_only = convert(model, dataclasses.replace(spec, head_rotation=False), calib, {"type": "bytes"},
                            rotation=back.rotation)
    assert set(residual_only.rotation) == {"residual"}
    assert np.array_equal(residual_only.rotation["residual"], back.rotation["residual"])


@pytest.mark.parametrize("which", ["default", "odd_dim", "unrotated"])
def test_channel_balancing_keeps_the_float_logits_and_scales_the_quantised_inputs(which):
    """Balancing folds s into up/down and v/o: the logits stay, and down_proj's input (before its
    online Hadamard) and o_proj's input arrive multiplied by s channel by channel (query heads by
    their KV head's s)."""
    from sdllm.models.conversion.balance import MAX_RATIO, balance, balance_scales, input_rms

    model = load_float(default_float()) if which == "default" else _random_model(ODD)
    prepared = prepare(model, which != "unrotated", 5)
    calib = torch.randint(0, model.cfg.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))
    rms = input_rms(prepared, calib)
    scales = balance_scales(prepared, rms, 0.5)
    c = model.cfg
    assert scales["down"].shape == (c.n_layers, c.ffn_dim) and scales["values"].shape == (c.n_layers, c.n_kv_heads * c.head_dim)
    for s in scales.values():
        assert (s >= 1 / MAX_RATIO).all() and (s <= MAX_RATIO).all() and s.std() > 0.05
    tokens = calib[:, :-1]
    with torch.no_grad():
        ref = model(tokens)
        balanced = balance(prepare(model, which != "unrotated", 5), scales)
        got = balanced(tokens)
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()
    after = input_rms(balanced, calib)
    assert torch.allclose(after["down"], rms["down"] * scales["down"], rtol=1e-3, atol=1e-6)
    group = c.n_heads // c.n_kv_heads
    per_head = scales["values"].reshape(c.n_layers, c.n_kv_heads, 1, c.head_dim).expand(-1, -1, group, -1).flatten(1)
    assert torch.allclose(after["values"], rms["values"] * per_head, rtol=1e-3, atol=1e-6)
    assert torch.equal(balance_scales(prepared, rms, 0.0)["down"], torch.ones_like(scales["down"]))


def test_a_balanced_conversion_stores_its_scales_and_evaluation_prepares_with_them(tiny_model, tmp_path):
    """model.pt keeps the channel scales conversion folded; the fake-quant model is prepared with
    them (its float weights read back the stored integers' scale), and balance 0 stores none."""
    import dataclasses

    from sdllm.formats import model as modelformat
    from sdllm.formats.model import QuantSpec
    from sdllm.models.conversion.convert import convert

    cfg = dataclasses.replace(ODD, dim=64, max_seq_len=24)
    model = _random_model(cfg)
    calib = torch.randint(0, cfg.vocab_size, (3, cfg.max_seq_len), generator=torch.Generator().manual_seed(2))
    spec = QuantSpec(rotation="hadamard", seed=3)
    converted = convert(model, spec, calib, {"type": "bytes"})
    assert converted.balance["down"].shape == (cfg.n_layers, cfg.ffn_dim)
    modelformat.save(converted, str(tmp_path / "m.pt"))
    back = modelformat.load(str(tmp_path / "m.pt"))
    assert back.quant.balance == 0.5 and all(np.array_equal(back.balance[k], converted.balance[k]) for k in converted.balance)
    plain = convert(model, dataclasses.replace(spec, balance=0.0), calib, {"type": "bytes"})
    assert plain.balance is None
    assert not np.array_equal(plain.weight("L0.down"), converted.weight("L0.down"))
    assert tiny_model.balance is not None  # the default spec balances


@pytest.mark.parametrize("n,k", [(576, 570), (576, 575), (1536, 1459), (64, 0), (64, 40)])
def test_the_fake_quant_order_statistic_is_the_sorted_value(n, k):
    """kth_smallest finds the (k+1)-th smallest by topk near the top, kthvalue elsewhere: the
    sorted array's value either way, ties included."""
    g = torch.Generator().manual_seed(n + k)
    a = torch.randint(0, 50, (3, 7, n), generator=g).float()  # many ties
    expected = torch.from_numpy(np.sort(a.numpy(), axis=-1)[..., k])
    assert torch.equal(kth_smallest(a, k), expected)
