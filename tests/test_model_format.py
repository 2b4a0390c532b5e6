import os
import pickle
import subprocess
import sys

import pytest
import torch

from sdllm.errors import SdllmError
from sdllm.formats import model as modelformat


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_model_pt_round_trips(tiny_model, tmp_path):
    path = tmp_path / "model.pt"
    modelformat.save(tiny_model, str(path))
    assert _equal(modelformat.load(str(path)).to_blob(), tiny_model.to_blob())


def test_truncated_file_is_a_clear_error(tiny_model, tmp_path):
    path = tmp_path / "model.pt"
    modelformat.save(tiny_model, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SdllmError, match="truncated or corrupt"):
        modelformat.load(str(path))


def test_wrong_format_version_is_a_clear_error(tiny_model, tmp_path):
    path = tmp_path / "model.pt"
    modelformat.save_blob({**tiny_model.to_blob(), "format_version": 99}, str(path))
    with pytest.raises(SdllmError, match="format_version 99 is not supported"):
        modelformat.load(str(path))


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
        modelformat.load(str(path))
    assert not marker.exists()


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(pickle.dumps({"format": "sdllm"})[:5])
    p = subprocess.run([sys.executable, "-m", "sdllm.cli.compile", str(path), "-o", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "bad.pt" in p.stderr
    assert not (tmp_path / "b").exists()
