"""The SmolLM2 files the shape and speed benchmarks share: the GGUF (fetched once into the user's
cache) and its W4A4 conversion (made once, kept in out/)."""

import os
import subprocess
import sys

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))


def gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF's path (`scripts/fetch_smollm2.sh`)."""
    return subprocess.run([os.path.join(HERE, "..", "scripts", "fetch_smollm2.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()


def w4a4_model(out_dir: str, source: str | None = None) -> str:
    """out_dir/smollm2_w4a4.pt, converted if absent with the random Hadamards: a 3-minute
    conversion, and a learned rotation changes no shape, count or speed these benchmarks measure."""
    path = os.path.join(out_dir, "smollm2_w4a4.pt")
    if not os.path.isfile(path):
        subprocess.run([os.path.join(BIN, "sdllm-convert"), source or gguf(), "-o", path, "--weight-bits", "4",
                        "--act-bits", "4", "--rotation", "hadamard"], check=True)
    return path
