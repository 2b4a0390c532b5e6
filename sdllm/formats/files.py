"""Input files as every reader opens them: a regular file (never a FIFO, which would block, a
device or a directory), of at most a given size, UTF-8 text, JSON whose nesting the decoder can
take and whose strings are Unicode text (no lone surrogate escapes). A violation is one
`SdllmError` line naming the file.

Checkpoint side files (a Hugging Face directory's config.json, tokenizer.json,
tokenizer_config.json, chat_template.jinja) and the user's own text files (--text, --calib-text)
are read through here, and model.pt and builds are opened after `regular_file`.
"""

import json
import os
import stat

from sdllm.errors import SdllmError

MAX_SIDE_FILE_BYTES = 256 << 20  # a checkpoint's tokenizer.json is a few MiB


def regular_file(path: str) -> int:
    """The size of the regular file at path; else one line saying what is there instead."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SdllmError(f"{path}: no such file") from None
    except OSError as e:
        raise SdllmError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise SdllmError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise SdllmError(f"{path}: is {kind}, not a regular file")
    if not os.access(path, os.R_OK):
        raise SdllmError(f"{path}: cannot read (permission denied)")
    return st.st_size


def read_bytes(path: str, max_bytes: int) -> bytes:
    size = regular_file(path)
    if size > max_bytes:
        raise SdllmError(f"{path}: {size:,} bytes; at most {max_bytes:,} are read")
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)  # not max_bytes + 1: Python allocates what it is asked for
    except OSError as e:
        raise SdllmError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > size:  # grew since it was measured
        raise SdllmError(f"{path}: changed while it was read")
    return data


def read_text(path: str, max_bytes: int = MAX_SIDE_FILE_BYTES) -> str:
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SdllmError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def read_json(path: str, max_bytes: int = MAX_SIDE_FILE_BYTES):
    return parse_json(read_text(path, max_bytes), path)


def parse_json(text: str, where: str):
    """A JSON document, its strings checked to be Unicode text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SdllmError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise SdllmError(f"{where}: not valid JSON (nested deeper than JSON decoding allows)") from None
    check_unicode(value, where)
    return value


def check_unicode(value, where: str) -> None:
    """Every string in a JSON value (keys included) is Unicode text: JSON's \\ud800-style escapes
    can spell lone surrogates, which no text encoding can write."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _unicode(v, where)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SdllmError(f"{where}: a string holds the lone surrogate U+{ord(text[e.start]):04X} "
                         f"(a \\u escape that is not Unicode text)") from None
