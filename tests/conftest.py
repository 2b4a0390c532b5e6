import os

import pytest
import torch

from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_model
from sdllm.formats import model as modelformat
from sdllm.formats.model import LlamaConfig, QuantSpec
from sdllm.models.conversion.convert import convert
from sdllm.models.source.corpus import calibration_tokens
from sdllm.models.source.importers import BYTES, default_float, load_float
from sdllm.models.source.llama import Llama

TINY = LlamaConfig(vocab_size=256, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=16)


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model converted to W4A4 (the demo's SDLLM)."""
    return convert(load_float(default_float()), QuantSpec(), calibration_tokens(BYTES, 128, 4), BYTES)


@pytest.fixture(scope="session")
def default_model_path(default_model, tmp_path_factory):
    path = os.path.join(tmp_path_factory.mktemp("model"), "model.pt")
    modelformat.save(default_model, path)
    return path


@pytest.fixture(scope="session")
def default_build(default_model, tmp_path_factory):
    out = os.path.join(tmp_path_factory.mktemp("build"), "build")
    emit(compile_model(default_model, "loihi2"), out)
    return out


def tiny_converted(spec: QuantSpec):
    """A small random LLaMA (seeded) converted with `spec` on seeded random calibration tokens."""
    torch.manual_seed(1)
    model = Llama(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    calib = torch.randint(0, 256, (2, TINY.max_seq_len), generator=torch.Generator().manual_seed(2))
    return convert(model, spec, calib, BYTES)


@pytest.fixture(scope="session")
def tiny_model():
    """A small random LLaMA (seeded), converted with 3-bit spikes: fast to compile and run."""
    return tiny_converted(QuantSpec(weight_bits=4, act_bits=3, kv_bits=8, theta=0))


def byte_level_bpe(vocab_size: int, special_tokens=()):
    """A byte-level BPE like SmolLM2's (a `tokenizers.Tokenizer`), trained on a little pydoc text;
    special tokens first, at ids 0, 1, ..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from sdllm.models.source.corpus import pydoc_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([pydoc_text()[:20000]], trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok
