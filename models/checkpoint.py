"""model.pt: a plain dict of tensors and primitive values, read with weights_only=True only."""

import os
import pickle
import re
import tempfile
import warnings
import zipfile

import torch

from sdllm.errors import SdllmError

FORMAT = "sdllm"
FORMAT_VERSION = 1


def save(blob: dict, path: str) -> None:
    """Write atomically: a crash or Ctrl-C never leaves a half-written file at `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".pt.tmp", dir=directory)
    os.close(fd)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_blob(path: str, expected_format: str) -> dict:
    """torch.load(weights_only=True) with every failure turned into one clear line."""
    if not os.path.isfile(path):
        raise SdllmError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code:
            raise SdllmError(f"{path}: refused to load: it references code ({code.group(1)}); only tensors and plain values are read") from None
        raise SdllmError(f"{path}: not a readable checkpoint (truncated or corrupt: not a tensor archive)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise SdllmError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != expected_format:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SdllmError(f"{path}: expected format '{expected_format}', found {got!r}")
    return blob


def load(path: str) -> dict:
    blob = load_blob(path, FORMAT)
    version = blob.get("format_version")
    if version != FORMAT_VERSION:
        raise SdllmError(f"{path}: format_version {version!r} is not supported (this sdllm reads {FORMAT_VERSION})")
    return blob
