"""Tokenizer specs (runtime/tokenizer.py) and the pydoc corpus windows taken with them."""

import numpy as np
import pytest
from conftest import byte_level_bpe

from sdllm.errors import SdllmError
from sdllm.models.source import corpus
from sdllm.tokenizer import decode, encode, vocab_size

BYTES = {"type": "bytes"}


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE like SmolLM2's, trained on a little pydoc text."""
    pytest.importorskip("tokenizers")
    return {"type": "hf-tokenizers", "json": byte_level_bpe(400).to_str()}


def test_bytes_round_trip():
    text = "def f(x):\n    return x  # é €"
    assert encode(BYTES, text) == list(text.encode("utf-8"))
    assert decode(BYTES, encode(BYTES, text)) == text and vocab_size(BYTES) == 256


@pytest.mark.parametrize("spec", ["bytes", "bpe"])
def test_decoding_partial_characters_and_foreign_ids_does_not_fail(spec, bpe):
    spec = BYTES if spec == "bytes" else bpe
    text = "héllo € world"
    ids = encode(spec, text)
    assert decode(spec, ids) == text
    prefixes = [decode(spec, ids[:i]) for i in range(len(ids) + 1)]
    assert "\ufffd" in "".join(prefixes)  # an incomplete UTF-8 character somewhere, not an exception
    assert decode(spec, [-1, *ids, vocab_size(spec), 10**9]) == text


def test_unknown_tokenizer_is_one_line_naming_it():
    with pytest.raises(SdllmError, match=r"^tokenizer 'sentencepiece' is not supported \(supported: none, bytes, hf-tokenizers\)$"):
        encode({"type": "sentencepiece"}, "x")
    with pytest.raises(SdllmError, match="'sentencepiece'"):
        corpus.calibration_windows({"type": "sentencepiece"}, 16, 2)


def test_byte_windows_keep_the_default_models_split():
    """The last 10% held out, windows evenly spaced: the figures in README.md were measured so."""
    data = np.frombuffer(corpus.pydoc_bytes(), np.uint8)
    cut = int(len(data) * 0.9)
    rows = corpus.held_out_windows(BYTES, 128, 8)
    step = (len(data) - cut) // 128 // 8
    assert rows.shape == (8, 128) and rows.dtype == np.int64
    assert all((rows[i] == data[cut + i * step * 128: cut + (i * step + 1) * 128]).all() for i in range(8))
    calib = corpus.calibration_windows(BYTES, 128, 16)[::len(corpus.MIXTURE_KINDS)]  # the reference's share: 4
    step = cut // 128 // 4
    assert all((calib[i] == data[i * step * 128: (i * step + 1) * 128]).all() for i in range(4))


def test_bpe_windows_split_the_token_stream_60_40(bpe):
    ids = corpus.token_ids(bpe)
    assert corpus.token_ids(bpe) is ids  # cached
    assert decode(bpe, ids) == corpus.pydoc_text()
    cut = int(len(ids) * 0.6)
    calib = corpus.calibration_windows(bpe, 64, 5 * len(corpus.MIXTURE_KINDS))[::len(corpus.MIXTURE_KINDS)]  # the reference's
    held = corpus.held_out_windows(bpe, 64, 3)
    assert calib.shape == (5, 64) and held.shape == (3, 64)
    assert all((corpus.windows(ids[:cut], 64) == r).all(1).any() for r in calib)
    assert all((corpus.windows(ids[cut:], 64) == r).all(1).any() for r in held)


def test_windows_longer_than_the_text_are_one_line():
    with pytest.raises(SdllmError, match=r"held-out text: \d+ tokens, fewer than one window of 10000000"):
        corpus.held_out_windows(BYTES, 10_000_000, 1)
