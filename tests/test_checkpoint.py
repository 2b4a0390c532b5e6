import os
import pickle
import subprocess
import sys

import pytest
import torch

from sdllm.errors import SdllmError
from sdllm.models import checkpoint


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_model_pt_round_trips(tiny_blob, tmp_path):
    path = tmp_path / "model.pt"
    checkpoint.save(tiny_blob, str(path))
    assert _equal(checkpoint.load(str(path)), tiny_blob)


def test_truncated_file_is_a_clear_error(tiny_blob, tmp_path):
    path = tmp_path / "model.pt"
    checkpoint.save(tiny_blob, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SdllmError, match="truncated or corrupt"):
        checkpoint.load(str(path))


def test_wrong_format_version_is_a_clear_error(tiny_blob, tmp_path):
    path = tmp_path / "model.pt"
    checkpoint.save({**tiny_blob, "format_version": 99}, str(path))
    with pytest.raises(SdllmError, match="format_version 99 is not supported"):
        checkpoint.load(str(path))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "sdllm", "format_version": 1, "x": _Payload(str(marker))}, str(path))
    with pytest.raises(SdllmError, match="refused to load"):
        checkpoint.load(str(path))
    assert not marker.exists()


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(pickle.dumps({"format": "sdllm"})[:5])
    p = subprocess.run([sys.executable, "-m", "sdllm.compiler.cli", str(path), "-o", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "bad.pt" in p.stderr
    assert not (tmp_path / "b").exists()
