"""Text for calibration and evaluation, tokenised with a model's tokenizer.

- pydoc topics (the stdlib's `pydoc_data.topics`): in-domain text. Held out: the last 10% for
  the embedded default model (a byte model trained on the first 90%), the last 40% for
  pretrained models; calibration windows come from the part before.
- stdlib docstrings: out-of-domain text of another kind that calibration never sees
  (`docstring_text`).
- your own files (`read_texts`): UTF-8 text, or JSON lines with a "text" field.

Windows are non-overlapping, `seq_len` tokens each, spread evenly over their text.
"""

import contextlib
import importlib
import inspect
import io
import json
import os
import subprocess
import sys
import warnings
from functools import lru_cache

import numpy as np

from sdllm.errors import SdllmError
from sdllm.formats import files
from sdllm.resources import require_memory
from sdllm.tokenizer import encode, kind

HELD_OUT_FRACTION = 0.1
PRETRAINED_HELD_OUT_FRACTION = 0.4
MAX_TEXT_BYTES = 1 << 30  # per file given with --calib-text / --text
# bytes of memory per byte of the files while their text is read, joined and encoded, at the least
# (the text, its joined copy, its UTF-8 bytes: the bytes tokenizer's tokens)
TEXT_COPIES = 3


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def pydoc_bytes() -> bytes:
    return pydoc_text().encode("utf-8")


def split(data, held_out_fraction: float = HELD_OUT_FRACTION):
    """(train, held_out): the held-out part is the last fraction. Bytes become uint8 arrays."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
    cut = int(len(arr) * (1.0 - held_out_fraction))
    return arr[:cut], arr[cut:]


def windows(arr: np.ndarray, length: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows of `length` tokens, shape (n, length)."""
    n = len(arr) // length
    if max_windows is not None:
        n = min(n, max_windows)
    return arr[: n * length].reshape(n, length).astype(np.int64)


def held_out_fraction(tokenizer: dict) -> float:
    return HELD_OUT_FRACTION if kind(tokenizer) == "bytes" else PRETRAINED_HELD_OUT_FRACTION


def tokens_of(tokenizer: dict, text: str) -> np.ndarray:
    """Token ids (the bytes tokenizer's as the uint8 bytes themselves: windows become int64 as
    they are cut)."""
    if kind(tokenizer) == "bytes":
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return np.asarray(encode(tokenizer, text), np.int64)


@lru_cache(maxsize=2)
def _token_ids(tokenizer_json: str | None) -> np.ndarray:
    if tokenizer_json is None:
        return np.frombuffer(pydoc_bytes(), dtype=np.uint8)
    return np.asarray(encode({"type": "hf-tokenizers", "json": tokenizer_json}, pydoc_text()), np.int64)


def token_ids(tokenizer: dict) -> np.ndarray:
    """The whole pydoc text as token ids (cached per tokenizer)."""
    return _token_ids(None if kind(tokenizer) == "bytes" else tokenizer["json"])


def spread(ids: np.ndarray, seq_len: int, n: int, what: str) -> np.ndarray:
    """n evenly spaced non-overlapping windows (fewer if the text is short), as int64."""
    n_rows = len(ids) // seq_len
    if n_rows == 0:
        raise SdllmError(f"{what}: {len(ids)} tokens, fewer than one window of {seq_len}")
    rows = ids[: n_rows * seq_len].reshape(n_rows, seq_len)
    return rows[:: max(1, n_rows // n)][:n].astype(np.int64)


def calibration_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens from the pydoc text before the held-out part."""
    train, _ = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    return spread(train, seq_len, n, "pydoc topics: the calibration text")


def held_out_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens from the held-out pydoc text."""
    _, held_out = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    return spread(held_out, seq_len, n, "pydoc topics: the held-out text")


def calibration_tokens(tokenizer: dict, seq_len: int, n_windows: int, paths=()):
    """Calibration windows as a torch tensor (n, seq_len): from the given files if any, else pydoc topics."""
    import torch

    if paths:
        return torch.from_numpy(spread(text_tokens(tokenizer, paths), seq_len, n_windows, "--calib-text"))
    return torch.from_numpy(calibration_windows(tokenizer, seq_len, n_windows))


# the out-of-domain corpus -------------------------------------------------------------------------

# modules whose import has side effects (a browser, a GUI, printing) or that are not library text
DOCSTRING_EXCLUDED = ("antigravity", "idlelib", "pydoc_data", "this", "tkinter", "turtle", "turtledemo", "test")


def _quiet_import(name: str):
    """The module, or None if importing it fails or writes anything to stdout/stderr."""
    out = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except BaseException:  # noqa: BLE001 — SystemExit and friends from odd modules count as failures too
        return None
    return None if out.getvalue() else module


def stdlib_modules():
    """(name, module) for each top-level stdlib module in sorted order (`sys.stdlib_module_names`,
    no private `_names`, none of DOCSTRING_EXCLUDED, only those that import without error or output)."""
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in DOCSTRING_EXCLUDED:
            continue
        module = _quiet_import(name)
        if module is not None:
            yield name, module


def collect_docstrings() -> str:
    """The docstring corpus as this interpreter sees it (`docstring_text` calls this in a fresh
    interpreter: libraries imported before, e.g. torch, patch some stdlib functions).

    For each module of `stdlib_modules()`: `inspect.getdoc` of the module, then of its public
    functions and classes defined in it, in sorted order. Empty and already-seen docstrings are skipped; the rest are joined by blank lines.
    """
    seen, parts = set(), []

    def add(doc):
        if doc and doc.strip() and doc not in seen:
            seen.add(doc)
            parts.append(doc.strip())

    for name, module in stdlib_modules():
        add(inspect.getdoc(module))
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr, None)
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and getattr(obj, "__module__", None) == name:
                add(inspect.getdoc(obj))
    return "\n\n".join(parts)


@lru_cache(maxsize=1)
def docstring_text() -> str:
    """The out-of-domain corpus: docstrings of the stdlib (`collect_docstrings`), gathered in a
    fresh isolated interpreter so that it is the same text whatever this process has imported;
    deterministic for a Python version."""
    code = "import sys; from sdllm.models.source.corpus import collect_docstrings; sys.stdout.buffer.write(collect_docstrings().encode())"
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SdllmError(f"stdlib docstrings: the collector failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout.decode("utf-8")


@lru_cache(maxsize=2)
def _docstring_ids(tokenizer_json: str | None) -> np.ndarray:
    spec = {"type": "bytes"} if tokenizer_json is None else {"type": "hf-tokenizers", "json": tokenizer_json}
    return tokens_of(spec, docstring_text())


def docstring_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens over the whole docstring corpus (out-of-domain)."""
    ids = _docstring_ids(None if kind(tokenizer) == "bytes" else tokenizer["json"])
    return spread(ids, seq_len, n, "stdlib docstrings")


# your own text ------------------------------------------------------------------------------------

def read_texts(paths) -> str:
    """The text of the given files, joined by blank lines: each UTF-8 text, or JSON lines (a .jsonl
    or .json file whose lines are objects with a "text" string). One line per bad file; the
    memory the text takes is checked before any file is read."""
    paths = list(paths)
    sizes = [files.regular_file(p) for p in paths]
    for path, size in zip(paths, sizes):
        if size > MAX_TEXT_BYTES:
            raise SdllmError(f"{path}: {size:,} bytes; a text file of at most {MAX_TEXT_BYTES:,} is read")
    require_memory(TEXT_COPIES * sum(sizes), ", ".join(paths)[:200])
    parts = []
    for path in paths:
        raw = files.read_text(path, MAX_TEXT_BYTES)
        parts.append(_jsonl_text(path, raw) if path.endswith((".jsonl", ".json")) else raw)
        del raw
    text = "\n\n".join(p for p in parts if p.strip())
    if not text.strip():
        raise SdllmError(f"{', '.join(paths)}: no text in the given file(s)")
    return text


def _jsonl_text(path: str, raw: str) -> str:
    texts = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise SdllmError(f"{path}: line {n}: not a JSON object ({' '.join(str(e).split())[:80]})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise SdllmError(f"{path}: line {n}: expected an object with a \"text\" string")
        files.check_unicode(obj["text"], f"{path}: line {n}: text")
        texts.append(obj["text"])
    return "\n\n".join(texts)


def text_tokens(tokenizer: dict, paths) -> np.ndarray:
    """The given files' text as token ids (`tokens_of`)."""
    return tokens_of(tokenizer, read_texts(paths))


def text_windows(tokenizer: dict, paths, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens over the given files' text."""
    return spread(text_tokens(tokenizer, paths), seq_len, n, ", ".join(paths))
