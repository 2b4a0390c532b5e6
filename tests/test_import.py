"""Import of pretrained checkpoints: both layouts give the reference implementation's logits."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from sdllm.models.importers import load_gguf, load_hf  # noqa: E402


def _hf_model(tie: bool):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=32,
                                   rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _tokens():
    return torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("tie", [False, True])
def test_hf_directory_import_matches_transformers(tmp_path, tie):
    ref = _hf_model(tie)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf(str(tmp_path))
    x = _tokens()
    with torch.no_grad():
        expected = ref(x).logits
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def _permute(w, n_heads):
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_gguf_import_matches_transformers(tmp_path):
    ref = _hf_model(tie=False)
    c = ref.config
    path = str(tmp_path / "tiny.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(32)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in ref.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(c.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, c.num_attention_heads)
            elif gg == "attn_k":
                t = _permute(t, c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ours = load_gguf(path)
    x = _tokens()
    with torch.no_grad():
        expected = ref(x).logits
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def _qwen2_model():
    cfg = transformers.Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=32,
                                   rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    torch.manual_seed(1)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def test_qwen2_with_attention_biases_matches_transformers(tmp_path):
    ref = _qwen2_model()
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf(str(tmp_path))
    assert ours.cfg.attn_bias and ours.layers[0].attn.q_proj.bias.abs().sum() > 0
    x = _tokens()
    with torch.no_grad():
        expected = ref(x).logits
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_convert_a_hugging_face_directory_with_its_tokenizer(tmp_path):
    import subprocess
    import sys

    from sdllm.models import checkpoint
    from sdllm.models.corpus import pydoc_text
    from sdllm.runtime.tokenizer import decode, encode

    words = sorted(set(pydoc_text().split()))[:96]  # 97 tokens with [UNK], the test model's vocabulary
    _word_tokenizer(words).save(str(tmp_path / "tokenizer.json"))
    _hf_model(tie=True).save_pretrained(tmp_path, safe_serialization=True)
    out = tmp_path / "model.pt"
    p = subprocess.run([sys.executable, "-m", "sdllm.models.convert", str(tmp_path), "-o", str(out), "--max-seq-len", "16",
                        "--calib-windows", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    blob = checkpoint.load(str(out))
    assert blob["tokenizer"]["type"] == "hf-tokenizers" and blob["config"]["max_seq_len"] == 16
    ids = encode(blob["tokenizer"], f"{words[3]} {words[7]} zzzunknown")
    assert ids == [4, 8, 0]
    assert decode(blob["tokenizer"], ids[:2]) == f"{words[3]} {words[7]}"


@pytest.mark.parametrize("make", ["missing", "not_gguf", "qwen3_gguf", "no_tokenizer"])
def test_convert_refuses_bad_sources_in_one_line(tmp_path, make):
    import subprocess
    import sys

    if make == "missing":
        src = tmp_path / "nowhere.gguf"
    elif make == "not_gguf":
        src = tmp_path / "junk.gguf"
        src.write_bytes(b"this is not a gguf file at all")
    elif make == "qwen3_gguf":
        src = tmp_path / "other.gguf"
        w = gguf.GGUFWriter(str(src), "qwen3")
        w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    else:
        src = tmp_path / "hf"
        _hf_model(tie=True).save_pretrained(src, safe_serialization=True)
    out = tmp_path / "model.pt"
    p = subprocess.run([sys.executable, "-m", "sdllm.models.convert", str(src), "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and str(src) in p.stderr, p.stderr
    assert not out.exists()
