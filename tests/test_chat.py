"""Chat templates: a SmolLM2-style tokenizer and template (ChatML special tokens, the model's own
Jinja template) come from a GGUF or a Hugging Face directory, travel in model.pt and the build,
and render exactly as transformers' apply_chat_template does — in a sandbox."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import byte_level_bpe

from sdllm.errors import SdllmError

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

# SmolLM2-135M-Instruct's template, verbatim from its GGUF (tokenizer.chat_template)
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CONVERSATION = [{"role": "user", "content": "What does the if statement do?"},
                {"role": "assistant", "content": "It runs a block when a condition holds."},
                {"role": "user", "content": "And elif?"}]


@pytest.fixture(scope="module")
def smol_tokenizer():
    """A byte-level BPE like SmolLM2's, with its special tokens at the same ids."""
    return byte_level_bpe(300, SPECIAL)


def _spec(tok):
    return {"type": "hf-tokenizers", "json": tok.to_str(), "bos_id": 1, "eos_id": 2, "chat_template": SMOLLM2_TEMPLATE}


def _reference_ids(tok, messages):
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = SMOLLM2_TEMPLATE
    ids = fast.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("messages", [CONVERSATION[:1], CONVERSATION,
                                      [{"role": "system", "content": "Be brief."}, *CONVERSATION[:1]]])
def test_chat_template_renders_as_transformers_does(smol_tokenizer, messages):
    from sdllm.chat import render
    from sdllm.tokenizer import encode

    spec = _spec(smol_tokenizer)
    text = render(spec, messages)
    assert text.endswith("<|im_start|>assistant\n") and text.count("<|im_start|>") == len(messages) + (messages[0]["role"] != "system") + 1
    ids = encode(spec, text)
    assert ids == _reference_ids(smol_tokenizer, messages)
    assert ids[0] == 1 and 2 in ids  # <|im_start|> and <|im_end|> are single special tokens, not their characters


def test_gguf_and_hugging_face_checkpoints_carry_their_template(smol_tokenizer, tmp_path):
    from sdllm.models.source.importers import load_tokenizer

    bpe = json.loads(smol_tokenizer.to_str())["model"]
    path = str(tmp_path / "tok.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(sorted(bpe["vocab"], key=bpe["vocab"].get))
    w.add_token_merges([" ".join(m) for m in bpe["merges"]])
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(bpe["vocab"]) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(SMOLLM2_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    spec = load_tokenizer(path)
    assert spec["chat_template"] == SMOLLM2_TEMPLATE and spec["eos_id"] == 2

    hf = tmp_path / "hf"
    hf.mkdir()
    smol_tokenizer.save(str(hf / "tokenizer.json"))
    (hf / "config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 0]}))  # a list: use the tokenizer config's
    (hf / "tokenizer_config.json").write_text(json.dumps({"chat_template": SMOLLM2_TEMPLATE, "eos_token": "<|im_end|>"}))
    spec = load_tokenizer(str(hf))
    assert spec["chat_template"] == SMOLLM2_TEMPLATE and spec["eos_id"] == 2 and spec["bos_id"] == 1
    (hf / "tokenizer_config.json").write_text("{}")
    (hf / "chat_template.jinja").write_text(SMOLLM2_TEMPLATE)
    assert load_tokenizer(str(hf))["chat_template"] == SMOLLM2_TEMPLATE


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__.__mro__ }}", "refused by the sandbox"),
    ("{% set x = messages.append(1) %}", "refused by the sandbox"),
    ("{{ raise_exception('only user and assistant roles') }}", "only user and assistant roles"),
    ("{% for m in messages %}", "not a valid Jinja template"),
])
def test_a_template_cannot_run_code_and_errors_are_one_line(smol_tokenizer, template, message):
    from sdllm.chat import render

    spec = {**_spec(smol_tokenizer), "chat_template": template}
    with pytest.raises(SdllmError, match=message) as e:
        render(spec, CONVERSATION[:1])
    assert "\n" not in str(e.value)


def test_no_template_or_a_bad_message_is_one_line():
    from sdllm.chat import render

    with pytest.raises(SdllmError, match="this model has no chat template"):
        render({"type": "bytes"}, CONVERSATION[:1])
    with pytest.raises(SdllmError, match="chat message 0: expected"):
        render({"type": "hf-tokenizers", "json": "{}", "chat_template": "x"}, [{"role": "robot", "content": "hi"}])


def test_model_file_and_build_carry_the_template_and_the_run_uses_it(smol_tokenizer, tmp_path):
    """A small model with the SmolLM2-style tokenizer: model.pt and the build keep the template;
    `sdllm-run --chat` renders it; a chat_template that is not text is refused on load."""
    import sdllm
    from sdllm.formats import model as modelformat
    from sdllm.formats.model import LlamaConfig, QuantSpec
    from sdllm.models.conversion.convert import convert
    from sdllm.models.source.llama import Llama

    cfg = LlamaConfig(vocab_size=320, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=128)
    torch.manual_seed(3)
    float_model = Llama(cfg)
    calib = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(4))
    spec = _spec(smol_tokenizer)
    model = convert(float_model, QuantSpec(act_bits=3), calib, spec)
    path = str(tmp_path / "model.pt")
    modelformat.save(model, path)
    assert modelformat.load(path).tokenizer["chat_template"] == SMOLLM2_TEMPLATE
    build = sdllm.compile(sdllm.load_model(path), "loihi2", str(tmp_path / "build"), rate_tokens=0)
    assert sdllm.load_build(build.path).tokenizer["chat_template"] == SMOLLM2_TEMPLATE
    run = build.run("What does the if statement do?", 3, chat=True, backend="fast")
    assert run.prompt_tokens == _reference_ids(smol_tokenizer, CONVERSATION[:1])

    bin_dir = os.path.dirname(sys.executable)
    p = subprocess.run([os.path.join(bin_dir, "sdllm-run"), build.path, "--chat", "--prompt", "What does the if statement do?",
                        "--max-new-tokens", "3", "--backend", "fast"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "(the model's chat template applied)" in p.stdout and run.text in p.stdout

    bad = dataclasses.replace(model, tokenizer={**spec, "chat_template": 7})
    modelformat.save(bad, path)
    with pytest.raises(SdllmError, match=r"tokenizer\.chat_template: expected a string"):
        modelformat.load(path)
