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


@pytest.fixture(scope="session")
def tiny_model():
    """A small random LLaMA (seeded), converted with 3-bit spikes: fast to compile and run."""
    torch.manual_seed(1)
    model = Llama(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    calib = torch.randint(0, 256, (2, TINY.max_seq_len), generator=torch.Generator().manual_seed(2))
    return convert(model, QuantSpec(weight_bits=4, act_bits=3, kv_bits=8, theta=0), calib, BYTES)
