"""Text in: the out-of-domain corpus, and the user's own files for calibration and evaluation."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sdllm.errors import SdllmError
from sdllm.models.source import corpus
from sdllm.models.source.importers import BYTES

BIN = os.path.dirname(sys.executable)


def test_the_docstring_corpus_is_real_deterministic_and_not_pydoc():
    text = corpus.docstring_text()
    assert len(text) > 300_000 and "Return" in text
    corpus.docstring_text.cache_clear()
    assert corpus.docstring_text() == text  # gathered again in a fresh interpreter: the same text
    assert text[:2000] not in corpus.pydoc_text()
    rows = corpus.docstring_windows(BYTES, 128, 8)
    assert rows.shape == (8, 128) and len({r.tobytes() for r in rows}) == 8


def test_text_and_json_lines_are_read(tmp_path):
    (tmp_path / "a.txt").write_text("first file\n")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert corpus.read_texts([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")]) == "first file\n\n\none\n\ntwo"
    rows = corpus.text_windows(BYTES, [str(tmp_path / "a.txt")], 4, 2)
    assert np.array_equal(rows, [list(b"firs"), list(b"t fi")])


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe not utf-8", "not UTF-8 text (byte 0: invalid start byte)"),
    (b'{"text": "ok"}\n{"txt": "no"}\n', 'line 2: expected an object with a "text" string'),
    (b'{"text": "ok"}\n[1, 2\n', "line 2: not a JSON object"),
    (b"   \n\n", "no text in the given file(s)"),
])
def test_bad_text_files_are_one_line(tmp_path, content, needle):
    path = tmp_path / ("bad.jsonl" if content.startswith(b"{") else "bad.txt")
    path.write_bytes(content)
    with pytest.raises(SdllmError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        corpus.read_texts([str(path)])


def test_too_little_text_for_one_window_is_one_line(tmp_path):
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(SdllmError, match="3 tokens, fewer than one window of 128"):
        corpus.text_windows(BYTES, [str(tmp_path / "short.txt")], 128, 4)


def test_convert_calibrates_on_your_text_and_refuses_a_bad_file(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text(corpus.docstring_text()[:20_000])
    out = tmp_path / "m.pt"
    p = subprocess.run([os.path.join(BIN, "sdllm-convert"), "-o", str(out), "--calib-text", str(mine), "--calib-windows", "2"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and out.is_file(), p.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xc3\x28")
    p = subprocess.run([os.path.join(BIN, "sdllm-convert"), "-o", str(tmp_path / "n.pt"), "--calib-text", str(bad)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not UTF-8 text" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "n.pt").exists()
