"""Text for calibration and evaluation, tokenised with a model's tokenizer.

- pydoc topics (the stdlib's `pydoc_data.topics`): in-domain text. Held out: the last 10% for
  the embedded default model (a byte model trained on the first 90%), the last 40% for
  pretrained models; calibration windows come from the part before.
- the calibration mixture (`calibration_windows`, the default calibration text): prose that ships
  with Python, windows taken in turn from each kind — pydoc topics before the held-out part, IDLE's
  user manual, its release notes, its readmes and Python's licence (MIXTURE_KINDS). The same bytes
  for a Python version on any machine; a kind this Python lacks is left out and named.
- stdlib docstrings: out-of-domain text of another kind that calibration never sees
  (`docstring_text`; neither docstrings nor stdlib source are in the mixture).
- your own files (`read_texts`): UTF-8 text, or JSON lines with a "text" field.

Windows are non-overlapping, `seq_len` tokens each, spread evenly over their text.
"""

import contextlib
import hashlib
import html.parser
import importlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import warnings
from functools import lru_cache

import numpy as np

from sdllm.errors import SdllmError
from sdllm.formats import files
from sdllm.resources import require_memory
from sdllm.tokenizer import encode, kind

HELD_OUT_FRACTION = 0.1
PRETRAINED_HELD_OUT_FRACTION = 0.4
# calibration windows by default: 16 of each of the mixture's four kinds (16 in all gave 4 of pydoc
# topics and cost SmolLM2 in-domain; 64 keeps in-domain as with 16 of pydoc alone, better out of domain)
CALIBRATION_WINDOWS = 64
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


def spread_index(n_rows: int, n: int) -> list:
    """Which of n_rows rows n evenly spaced windows take (all of them if n >= n_rows)."""
    return list(range(n_rows))[:: max(1, n_rows // n)][:n] if n else []


def unfitted_index(n_rows: int, fitted: int, n: int) -> list:
    """n rows evenly spread over those the first `fitted` evenly spaced windows do not take."""
    taken = set(spread_index(n_rows, fitted))
    free = [i for i in range(n_rows) if i not in taken]
    return [free[i] for i in spread_index(len(free), n)]


def spread(ids: np.ndarray, seq_len: int, n: int, what: str, skip: int = 0) -> np.ndarray:
    """n evenly spaced non-overlapping windows (fewer if the text is short), as int64. skip: spread
    them over the rows the first `skip` such windows leave (windows the conversion did not fit on)."""
    n_rows = len(ids) // seq_len
    if n_rows == 0:
        raise SdllmError(f"{what}: {len(ids)} tokens, fewer than one window of {seq_len}")
    rows = ids[: n_rows * seq_len].reshape(n_rows, seq_len)
    return rows[unfitted_index(n_rows, skip, n) if skip else spread_index(n_rows, n)].astype(np.int64)


def held_out_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n evenly spaced windows of seq_len tokens from the held-out pydoc text."""
    _, held_out = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    return spread(held_out, seq_len, n, "pydoc topics: the held-out text")


def calibration_tokens(tokenizer: dict, seq_len: int, n_windows: int, paths=(), skip: int = 0):
    """Calibration windows as a torch tensor (n, seq_len): from the given files if any, else the
    default mixture (`calibration_windows`). skip: windows of the same text that the first `skip`
    leave out — text the conversion calibrated on `skip` windows did not fit to (fewer, or none,
    when the text is short)."""
    import torch

    if paths:
        return torch.from_numpy(spread(text_tokens(tokenizer, paths), seq_len, n_windows, "--calib-text", skip))
    return torch.from_numpy(mixture_windows(tokenizer, seq_len, n_windows, skip=skip))


# the calibration mixture ----------------------------------------------------------------------------

# The default calibration text: kinds of prose that ship with Python itself (the same bytes for a
# Python version on any machine), never docstrings nor stdlib source (the out-of-domain text).
# Each kind is (name, what it is, files relative to the stdlib folder); pydoc topics are the first.
MIXTURE_NAME = "python-prose-1"
MIXTURE_KINDS = (
    ("reference", "pydoc topics before the held-out part (the language reference)", ()),
    ("manual", "IDLE's user manual (idlelib/help.html, its text)", ("idlelib/help.html",)),
    ("release notes", "IDLE's release notes and change log",
     ("idlelib/NEWS.txt", "idlelib/NEWS2x.txt", "idlelib/HISTORY.txt", "idlelib/ChangeLog")),
    ("readmes", "IDLE's readmes, Python's licence and history, the email package's design notes",
     ("idlelib/README.txt", "idlelib/TODO.txt", "idlelib/extend.txt", "idlelib/CREDITS.txt",
      "email/architecture.rst", "LICENSE.txt")),
)
MIXTURE_FILE_BYTES = 1 << 22  # a shipped prose file is far smaller; a larger one is not read


class _HtmlText(html.parser.HTMLParser):
    """The text of an HTML page's main part (Sphinx's role="main" block when there is one),
    a line break at each block element, scripts and styles dropped."""

    BLOCKS = {"p", "div", "section", "br", "li", "dt", "dd", "pre", "tr", "table", "ul", "ol", "dl",
              "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip, self.depth, self.main_depth, self.main = [], 0, 0, None, []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        if tag == "div":
            self.depth += 1
            if self.main_depth is None and ("role", "main") in attrs:
                self.main_depth, self.parts = self.depth, []
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "div":
            if self.main_depth == self.depth:
                self.main, self.parts, self.main_depth = self.parts, [], -1
            self.depth -= 1

    def handle_data(self, data):
        if not self.skip and (self.main_depth is None or self.main_depth > 0):
            self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.main or self.parts)
        lines = [" ".join(line.split()) for line in raw.splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_text(raw: str) -> str:
    """The text of an HTML page (`_HtmlText`)."""
    parser = _HtmlText()
    parser.feed(raw)
    parser.close()
    return parser.text()


def _shipped_text(root: str, relative: str) -> str | None:
    """A prose file that ships with Python (HTML as its text), or None when this Python lacks it."""
    path = os.path.join(root, *relative.split("/"))
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MIXTURE_FILE_BYTES:
            return None
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    raw = raw.replace("\r\n", "\n")
    return html_text(raw) if relative.endswith(".html") else raw


def stdlib_folder(kind: str = "stdlib") -> str:
    """This Python's standard-library folder ("platstdlib": its platform-specific one)."""
    return sysconfig.get_paths()[kind]


@lru_cache(maxsize=2)
def mixture_texts(root: str | None = None) -> tuple:
    """((kind name, its text or None when none of its files is in this Python, the files missing), ...)
    for the kinds after the reference (whose text is `pydoc_text`), in MIXTURE_KINDS order."""
    root = stdlib_folder() if root is None else root
    out = []
    for name, _, paths in MIXTURE_KINDS[1:]:
        texts = {p: _shipped_text(root, p) for p in paths}
        present = [t for t in texts.values() if t and t.strip()]
        missing = tuple(p for p, t in texts.items() if not (t and t.strip()))
        out.append((name, "\n\n".join(present) if present else None, missing))
    return tuple(out)


def describe_mixture(root: str | None = None) -> str:
    """The default calibration text in one line: its name and kinds, and what this Python lacks."""
    kinds, missing = [], []
    texts = {name: (text, gone) for name, text, gone in mixture_texts(root)}
    for name, what, _ in MIXTURE_KINDS:
        text, gone = texts.get(name, ("", ()))
        if text is None:
            missing.append(f"{name} (none of its files in this Python: left out)")
            continue
        kinds.append(what + (f" [missing: {', '.join(gone)}]" if gone else ""))
    line = f"{MIXTURE_NAME} mixture, windows round-robin from: " + "; ".join(kinds)
    return line + (f"; {', '.join(missing)}" if missing else "")


def _kind_ids(tokenizer: dict, root: str | None) -> list:
    """[(kind name, token ids)] of the kinds present: the reference's train part first."""
    train, _ = split(token_ids(tokenizer), held_out_fraction(tokenizer))
    out = [(MIXTURE_KINDS[0][0], train)]
    for name, text, _ in mixture_texts(root):
        if text is not None:
            out.append((name, tokens_of(tokenizer, text)))
    return out


def _round_robin(room: list, n: int) -> tuple:
    """(windows per kind, [(kind, its i-th window)] in order): window i from kind i mod K while
    every kind has room left; a kind without room is passed over."""
    counts, order = [0] * len(room), []
    while len(order) < n and any(c < r for c, r in zip(counts, room)):
        for k in range(len(room)):
            if len(order) < n and counts[k] < room[k]:
                order.append((k, counts[k]))
                counts[k] += 1
    return counts, order


def mixture_windows(tokenizer: dict, seq_len: int, n: int, root: str | None = None, skip: int = 0) -> np.ndarray:
    """n windows of seq_len tokens drawn evenly from each kind of the mixture, interleaved: window
    i comes from kind i mod K while every kind has windows left; a kind too short for its share gives
    what it has and the others take the rest (fewer than n only if all run out). Within a kind its
    windows are spread evenly over its text (`spread`). skip: the same drawn from the rows that the
    first `skip` windows leave (text a conversion calibrated on `skip` windows did not fit to).
    Deterministic for a Python version."""
    kinds = [(name, ids) for name, ids in _kind_ids(tokenizer, root)]
    n_rows = [len(ids) // seq_len for _, ids in kinds]
    if n_rows[0] == 0:
        raise SdllmError(f"pydoc topics: the calibration text: {len(kinds[0][1])} tokens, fewer than one window of {seq_len}")
    fitted, _ = _round_robin(n_rows, skip)
    free = [r - len(spread_index(r, f)) for r, f in zip(n_rows, fitted)]
    counts, order = _round_robin(free, n)
    picked = [unfitted_index(r, f, c) if skip else spread_index(r, c) for r, f, c in zip(n_rows, fitted, counts)]
    windows = [np.asarray(ids[: r * seq_len]).reshape(r, seq_len) for (_, ids), r in zip(kinds, n_rows)]
    if not order:
        return np.zeros((0, seq_len), np.int64)
    return np.stack([windows[k][picked[k][i]] for k, i in order]).astype(np.int64)


def calibration_windows(tokenizer: dict, seq_len: int, n: int) -> np.ndarray:
    """n windows of seq_len tokens of the default calibration text: the mixture (`mixture_windows`),
    whose first window is the reference's first."""
    return mixture_windows(tokenizer, seq_len, n)


def mixture_id() -> str:
    """The default calibration text's identity: the mixture's name and a digest of its texts (the
    same for a Python version on any machine) — e.g. for a cache of conversions to key on."""
    digest = hashlib.sha256(pydoc_text().encode("utf-8"))
    for name, text, _ in mixture_texts():
        digest.update(b"\0" + name.encode() + b"\0" + (text or "").encode("utf-8"))
    return f"{MIXTURE_NAME}:{digest.hexdigest()[:16]}"


def calibration_name(paths=()) -> str:
    """What `calibration_tokens` calibrates on, in one line (for the log and model.pt's
    `calibration`): the mixture's description, or the given files' names."""
    from sdllm.formats.model import CALIBRATION_CHARS

    line = ("your text (--calib-text): " + ", ".join(os.path.basename(str(p)) for p in paths)) if paths else describe_mixture()
    return line if len(line) <= CALIBRATION_CHARS else line[: CALIBRATION_CHARS - 3] + "..."


# the out-of-domain corpus -------------------------------------------------------------------------

# modules whose import has side effects (a browser, a GUI, printing) or that are not library text
# (distutils: setuptools installs a stand-in for it where it is present, so its text depends on the venv)
DOCSTRING_EXCLUDED = ("antigravity", "distutils", "idlelib", "pydoc_data", "this", "tkinter", "turtle", "turtledemo", "test")


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
    no private `_names`, none of DOCSTRING_EXCLUDED, only those that import without error or output
    and come from this Python's stdlib directories or are built in: a stand-in from site-packages is
    not this Python's stdlib, and would make the text depend on what else is installed)."""
    stdlib = tuple(os.path.realpath(stdlib_folder(kind)) + os.sep for kind in ("stdlib", "platstdlib"))
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in DOCSTRING_EXCLUDED:
            continue
        module = _quiet_import(name)
        where = getattr(module, "__file__", None)
        if module is not None and (where is None or os.path.realpath(where).startswith(stdlib)):
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
