"""Text in: the out-of-domain corpus, and the user's own files for calibration and evaluation."""

import os
import re
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
    assert "calibration text: 2 windows of 128 tokens: your text (--calib-text): mine.txt" in p.stderr
    from sdllm.formats import model as modelformat
    assert modelformat.load(str(out)).calibration == "2 windows of 128 tokens: your text (--calib-text): mine.txt"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xc3\x28")
    p = subprocess.run([os.path.join(BIN, "sdllm-convert"), "-o", str(tmp_path / "n.pt"), "--calib-text", str(bad)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "not UTF-8 text" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "n.pt").exists()


# the default calibration text: a mixture of prose that ships with Python ------------------------------

def _kind_texts():
    return {name: text for name, text, _ in corpus.mixture_texts()}


def test_the_calibration_mixture_is_deterministic_and_has_every_kind():
    rows = corpus.calibration_windows(BYTES, 128, 16)
    corpus.mixture_texts.cache_clear()
    again = corpus.calibration_windows(BYTES, 128, 16)
    assert rows.shape == (16, 128) and rows.tobytes() == again.tobytes()  # the same bytes, read again
    assert corpus.mixture_id() == corpus.mixture_id() and corpus.mixture_id().startswith(corpus.MIXTURE_NAME + ":")
    texts = _kind_texts()
    assert set(texts) == {name for name, _, _ in corpus.MIXTURE_KINDS[1:]} and all(texts.values())
    assert "<" not in texts["manual"][:2000] and "IDLE" in texts["manual"]  # the manual's text, not its HTML
    train, _ = corpus.split(corpus.pydoc_bytes())
    kinds = [train.tobytes()] + [texts[name].encode() for name, _, _ in corpus.MIXTURE_KINDS[1:]]
    for i, row in enumerate(rows):  # round-robin: window i is of kind i mod K, each kind's text holds it
        assert row.astype(np.uint8).tobytes() in kinds[i % len(kinds)], i
    # the first window is the reference's first: the compiler's rate measurement reads the same text as before
    assert np.array_equal(corpus.calibration_windows(BYTES, 128, 1)[0], train[:128])
    assert "python-prose-1 mixture" in corpus.calibration_name() and "IDLE's user manual" in corpus.calibration_name()


def test_the_calibration_mixture_never_holds_docstrings_or_held_out_text():
    """Independent of how the kinds are chosen: no 64-byte span of any mixture window occurs in the
    docstring corpus (the out-of-domain text) or in the held-out pydoc text."""
    rows = corpus.calibration_windows(BYTES, 128, 32)
    docstrings = corpus.docstring_text().encode("utf-8")
    _, held = corpus.split(corpus.pydoc_bytes())
    held = held.tobytes()
    for row in rows:
        data = row.astype(np.uint8).tobytes()
        for start in range(0, len(data) - 64 + 1):
            span = data[start:start + 64]
            assert span not in docstrings and span not in held, span


def test_a_kind_missing_from_this_python_is_left_out_and_a_short_one_gives_what_it_has(tmp_path):
    root = tmp_path / "lib"
    (root / "idlelib").mkdir(parents=True)
    (root / "idlelib" / "NEWS.txt").write_text("release notes " * 40)  # 560 bytes: 4 windows of 128
    (root / "LICENSE.txt").write_text("licence terms " * 10)  # 140 bytes: 1 window
    texts = {name: (text, missing) for name, text, missing in corpus.mixture_texts(str(root))}
    assert texts["manual"] == (None, ("idlelib/help.html",))
    assert texts["release notes"][0].startswith("release notes") and "idlelib/HISTORY.txt" in texts["release notes"][1]
    line = corpus.describe_mixture(str(root))
    assert "manual (none of its files in this Python: left out)" in line and "[missing: idlelib/README.txt" in line
    rows = corpus.mixture_windows(BYTES, 128, 12, str(root))
    assert rows.shape == (12, 128)  # the short kinds' shortfall is made up by the reference
    data = [r.astype(np.uint8).tobytes() for r in rows]
    news, licence = (root / "idlelib" / "NEWS.txt").read_bytes(), (root / "LICENSE.txt").read_bytes()
    assert data[1] in news and data[2] in licence  # round-robin over the kinds present
    assert sum(d in news for d in data) == 4 and sum(d in licence for d in data) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(corpus.mixture_windows(BYTES, 128, 3, str(empty))) == 3  # no kind but the reference: still windows
    assert "left out" in corpus.describe_mixture(str(empty))


def test_windows_the_conversion_did_not_fit_to_share_no_byte_offset_with_those_it_did(tmp_path):
    """The budget search measures on windows of the calibration text beside the fitted ones: the
    oracle is the text's own byte offsets (every window is a whole 128-byte row of its kind)."""
    fitted = [r.astype(np.uint8).tobytes() for r in corpus.calibration_windows(BYTES, 128, 16)]
    rows = [r.astype(np.uint8).tobytes() for r in np.asarray(corpus.calibration_tokens(BYTES, 128, 8, skip=16))]
    assert len(rows) == 8 and not set(rows) & set(fitted) and len(set(rows)) == 8
    texts = _kind_texts()
    train, _ = corpus.split(corpus.pydoc_bytes())
    kinds = [train.tobytes()] + [texts[name].encode() for name, _, _ in corpus.MIXTURE_KINDS[1:]]
    for i, row in enumerate(rows):  # round-robin over the kinds as the fitted ones, at a row boundary
        text = kinds[i % len(kinds)]
        offsets = [m.start() for m in re.finditer(re.escape(row), text)]
        assert any(o % 128 == 0 for o in offsets), i
        assert all(text[o:o + 128] != f for o in offsets if o % 128 == 0 for f in fitted)
    # a short kind: 4 rows, 2 of them fitted (of 8 windows); 2 left, then it is passed over
    root = tmp_path / "lib"
    (root / "idlelib").mkdir(parents=True)
    (root / "idlelib" / "NEWS.txt").write_text("".join(f"note {i:03d} " * 14 + "x\n" for i in range(4)))  # 4 x 128 bytes
    fit = [r.astype(np.uint8).tobytes() for r in corpus.mixture_windows(BYTES, 128, 4, str(root))]
    left = [r.astype(np.uint8).tobytes() for r in corpus.mixture_windows(BYTES, 128, 8, str(root), skip=4)]
    news = (root / "idlelib" / "NEWS.txt").read_bytes()
    assert sum(r in news for r in fit) == 2 and sum(r in news for r in left) == 2 and not set(fit) & set(left)
    # your text: the same rule; too short for any window left is an empty set (the API says so in one line)
    mine = tmp_path / "mine.txt"
    mine.write_text("".join(f"line {i:04d} " * 12 + "abcdefgh" for i in range(6)))  # 6 x 128 bytes
    fit = {bytes(r.astype(np.uint8)) for r in np.asarray(corpus.calibration_tokens(BYTES, 128, 3, [str(mine)]))}
    left = [bytes(r.astype(np.uint8)) for r in np.asarray(corpus.calibration_tokens(BYTES, 128, 3, [str(mine)], skip=3))]
    assert len(left) == 3 and not fit & set(left) and all(r in mine.read_bytes() for r in left)
    assert len(corpus.calibration_tokens(BYTES, 128, 3, [str(mine)], skip=6)) == 0


def test_your_text_replaces_the_mixture(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("my own words. " * 100)
    rows = np.asarray(corpus.calibration_tokens(BYTES, 128, 4, [str(mine)]))
    assert all(bytes(r.astype(np.uint8)) in mine.read_bytes() for r in rows)
    assert corpus.calibration_name([str(mine)]) == "your text (--calib-text): mine.txt"


def test_a_conversion_records_its_calibration_text():
    import sdllm

    model = sdllm.convert(calib_windows=2, rotation="hadamard")
    assert model.file.calibration == "2 windows of 128 tokens: " + corpus.describe_mixture()
    assert model.file.calibration.startswith("2 windows of 128 tokens: python-prose-1 mixture, windows round-robin from: ")


def test_the_default_window_count_is_one_number():
    import inspect

    import sdllm
    from sdllm.cli.convert import _main

    assert inspect.signature(sdllm.convert).parameters["calib_windows"].default == corpus.CALIBRATION_WINDOWS
    assert corpus.CALIBRATION_WINDOWS % len(corpus.MIXTURE_KINDS) == 0  # an equal share of each kind
    assert "CALIBRATION_WINDOWS" in inspect.getsource(_main)
