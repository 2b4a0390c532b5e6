"""Import of pretrained checkpoints: both layouts give the reference implementation's logits."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from sdllm.models.source.importers import load_gguf, load_hf  # noqa: E402


def _hf_model(tie: bool, family: str = "llama"):
    """A small random transformers model: LLaMA, or Qwen2 (q/k/v biases, rope_theta 1e6)."""
    config, model_class, theta, seed = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, 1e4, 0),
                                        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, 1e6, 1)}[family]
    cfg = config(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                 num_key_value_heads=2, max_position_embeddings=32, rope_theta=theta, rms_norm_eps=1e-5,
                 tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = model_class(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _tokens():
    return torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(3))


def _assert_same_logits(ours, ref):
    x = _tokens()
    with torch.no_grad():
        expected = ref(x).logits
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("tie", [False, True])
def test_hf_directory_import_matches_transformers(tmp_path, tie):
    ref = _hf_model(tie)
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf(str(tmp_path))
    _assert_same_logits(ours, ref)


def _permute(w, n_heads):
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _write_gguf(ref, path, arch):
    """The model as llama.cpp's converter writes it: Q/K rows permuted for llama only, biases for qwen2."""
    c = ref.config
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}  # transformers 5 or 4
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in ref.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(c.num_hidden_layers):
        for hf, gg in GGUF_LAYER.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if arch == "llama" and gg == "attn_q":
                t = _permute(t, c.num_attention_heads)
            elif arch == "llama" and gg == "attn_k":
                t = _permute(t, c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", t)
            if f"model.layers.{i}.{hf}.bias" in sd:
                w.add_tensor(f"blk.{i}.{gg}.bias", sd[f"model.layers.{i}.{hf}.bias"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_import_matches_transformers(tmp_path):
    ref = _hf_model(tie=False)
    path = str(tmp_path / "tiny.gguf")
    _write_gguf(ref, path, "llama")
    ours = load_gguf(path)
    _assert_same_logits(ours, ref)


def test_qwen2_with_attention_biases_matches_transformers(tmp_path):
    ref = _hf_model(tie=True, family="qwen2")
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf(str(tmp_path))
    assert ours.cfg.attn_bias and ours.layers[0].attn.q_proj.bias.abs().sum() > 0
    _assert_same_logits(ours, ref)


def test_qwen2_gguf_with_attention_biases_matches_transformers(tmp_path):
    ref = _hf_model(tie=True, family="qwen2")
    path = str(tmp_path / "qwen2.gguf")
    _write_gguf(ref, path, "qwen2")
    ours = load_gguf(path)
    assert ours.cfg.attn_bias and ours.cfg.tie_embeddings and ours.cfg.rope_theta == 1e6
    _assert_same_logits(ours, ref)


def _byte_bpe(text, vocab_size):
    """A small byte-level BPE (GPT-2 style, like SmolLM2's) with <s> and </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok


def test_gguf_tokenizer_is_rebuilt_from_its_metadata(tmp_path):
    import json

    from sdllm.models.source.corpus import pydoc_text
    from sdllm.models.source.importers import load_tokenizer
    from sdllm.tokenizer import decode, encode

    text = pydoc_text()
    ref = _byte_bpe(text[:20000], 400)
    bpe = json.loads(ref.to_str())["model"]
    path = str(tmp_path / "tok.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(sorted(bpe["vocab"], key=bpe["vocab"].get))
    w.add_token_merges([" ".join(m) for m in bpe["merges"]])
    w.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * (len(bpe["vocab"]) - 2))
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    spec = load_tokenizer(path)
    assert spec["bos_id"] == 0 and spec["eos_id"] == 1
    sample = text[30000:32000] + " héllo €"
    assert encode(spec, sample) == ref.encode(sample).ids
    assert decode(spec, encode(spec, sample)) == sample


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def test_convert_a_hugging_face_directory_with_its_tokenizer(tmp_path):
    import subprocess
    import sys

    from sdllm.formats import model as modelformat
    from sdllm.models.source.corpus import pydoc_text
    from sdllm.tokenizer import decode, encode

    words = sorted(set(pydoc_text().split()))[:96]  # 97 tokens with [UNK], the test model's vocabulary
    _word_tokenizer(words).save(str(tmp_path / "tokenizer.json"))
    _hf_model(tie=True).save_pretrained(tmp_path, safe_serialization=True)
    out = tmp_path / "model.pt"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.convert", str(tmp_path), "-o", str(out), "--max-seq-len", "16",
                        "--calib-windows", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    model = modelformat.load(str(out))
    assert model.tokenizer["type"] == "hf-tokenizers" and model.config.max_seq_len == 16
    assert model.tokenizer["bos_id"] == 1 and model.tokenizer["eos_id"] == 2  # from config.json
    ids = encode(model.tokenizer, f"{words[3]} {words[7]} zzzunknown")
    assert ids == [4, 8, 0]
    assert decode(model.tokenizer, ids[:2]) == f"{words[3]} {words[7]}"


@pytest.mark.parametrize("make", ["missing", "not_gguf", "qwen3_gguf", "no_tokenizer", "gemma", "big_tokenizer",
                                  "too_long"])
def test_convert_refuses_bad_sources_in_one_line(tmp_path, make):
    import json
    import subprocess
    import sys

    args = []
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
        if make == "gemma":
            config = json.loads((src / "config.json").read_text())
            (src / "config.json").write_text(json.dumps({**config, "model_type": "gemma"}))
        elif make == "big_tokenizer":
            _word_tokenizer([f"w{i}" for i in range(200)]).save(str(src / "tokenizer.json"))
        elif make == "too_long":
            _word_tokenizer(["a", "b"]).save(str(src / "tokenizer.json"))
            args = ["--max-seq-len", "64"]  # the model has 32 positions
    out = tmp_path / "model.pt"
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.convert", str(src), "-o", str(out), *args],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and str(src) in p.stderr, p.stderr
    assert {"gemma": "'gemma'", "big_tokenizer": "201 tokens", "too_long": "2..32"}.get(make, "") in p.stderr
    assert not out.exists()


def test_max_seq_len_of_our_checkpoint():
    from sdllm.errors import SdllmError
    from sdllm.models.source.importers import load_source

    model, tokenizer = load_source(None, 64)
    assert model.cfg.max_seq_len == 64 and tokenizer == {"type": "bytes"}
    assert load_source(None)[0].cfg.max_seq_len == 128
    for bad, limit in [(1, "at least 2"), (129, "context of 128")]:
        with pytest.raises(SdllmError, match=f"--max-seq-len: .*{limit}, got {bad}$"):
            load_source(None, bad)
