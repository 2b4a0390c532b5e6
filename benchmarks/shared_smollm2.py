"""The SmolLM2 files the benchmarks share: the GGUF (fetched once into the user's cache), its
conversions with sdllm-convert's flags (made once, kept in a cache folder under out/), and the
random-Hadamard W4A4 conversion the shape and speed benchmarks use."""

import hashlib
import json
import os
import subprocess
import sys
import time

from sdllm.formats.model import QuantSpec
from sdllm.models.source.corpus import mixture_id

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


def _search_code() -> str:
    """A digest of the budget search's modules (what a budgeted conversion also depends on)."""
    from sdllm.models.conversion import budget, target_fit

    digest = hashlib.sha256()
    for module in (budget, target_fit):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def convert_cached(gguf: str, flags: list, cache: str, windows: int) -> tuple:
    """(model.pt path, conversion seconds, peak GB): sdllm-convert in a child process, or the cached file."""
    # the defaults (as model.pt records them) and the default calibration text's identity: a model converted before a
    # default or the calibration mixture changed is not taken for one after; a budgeted one, the
    # search's own code too
    parts = [os.path.basename(gguf), flags, windows, json.dumps(QuantSpec().to_dict(), sort_keys=True), mixture_id()]
    key = hashlib.sha256(json.dumps(parts + ([_search_code()] if "--budget" in flags else [])).encode()).hexdigest()[:16]
    path, meta = os.path.join(cache, f"{key}.pt"), os.path.join(cache, f"{key}.json")
    if os.path.exists(path) and os.path.exists(meta):
        with open(meta) as f:
            m = json.load(f)
        return path, m["seconds"], m["peak_gb"]
    code = ("import resource, sys; from sdllm.cli.convert import main; rc = main(sys.argv[1:]); "
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code, gguf, "-o", path, "--calib-windows", str(windows), *flags],
                       stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise SystemExit(f"sdllm-convert {' '.join(flags)} failed ({p.returncode})")
    seconds = time.time() - t0
    peak = int(p.stdout.split("peak_kb")[-1]) / 2**20
    with open(meta, "w") as f:
        json.dump({"flags": flags, "seconds": seconds, "peak_gb": peak}, f)
    return path, seconds, peak
