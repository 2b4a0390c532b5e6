"""The wheel: built from a copy of the source tree without setuptools warnings, it holds every
module of every package, the hardware configs, the default model and the six commands — and
nothing else (no tests, benchmarks or scripts)."""

import configparser
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

from test_layers import PACKAGES, modules

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMANDS = {"sdllm-convert", "sdllm-compile", "sdllm-run", "sdllm-eval", "sdllm-demo", "sdllm-lm-eval"}
BENIGN = re.compile(r"byte-compiling is disabled")  # the environment's PYTHONDONTWRITEBYTECODE, not the package


def _wheel_path(module: str, source: pathlib.Path) -> str:
    """Where a source file lands in the wheel: its package's import path."""
    folder = source.relative_to(ROOT).parts[0]
    rest = source.relative_to(ROOT / folder).parts
    return "/".join([*PACKAGES[folder].split("."), *rest])


def test_wheel_holds_every_package_the_configs_the_default_model_and_the_commands(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "out", "dist", "__pycache__",
                                                             "*.egg-info", ".pytest_cache", ".ruff_cache"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    warnings = [ln for ln in (p.stdout + p.stderr).splitlines() if re.search(r"warn", ln, re.I) and not BENIGN.search(ln)]
    assert not warnings, "\n".join(warnings)
    (wheel,) = (tmp_path / "dist").glob("sdllm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        expected = {_wheel_path(m, path) for m, path in modules().items()}
        expected |= {f"sdllm/hw_configs/{f.name}" for f in (ROOT / "hw_configs").glob("*.yaml")}
        expected.add("sdllm/models/default/float.pt")
        missing = expected - names
        assert not missing, sorted(missing)
        assert z.read("sdllm/models/default/float.pt") == (ROOT / "models" / "default" / "float.pt").read_bytes()
        assert len(expected) > 70 and any(n.endswith("hw_configs/kapoho_point.yaml") for n in expected)
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = configparser.ConfigParser()
        scripts.read_string(z.read(info).decode())
        assert set(scripts["console_scripts"]) == COMMANDS
        assert dict(scripts["lm_eval.models"]) == {"sdllm": "sdllm.harness:SdllmLM"}  # the harness's plugin group
        stray = {n for n in names if not n.startswith(("sdllm/", "sdllm-"))} | (names - expected - {
            n for n in names if ".dist-info/" in n})
        assert not stray, sorted(stray)
