"""sdllm-convert: a float LLaMA-family checkpoint -> an SDLLM model.pt.

    sdllm-convert [SRC] -o model.pt [--weight-bits 4] [--act-bits 4] [--kv-bits 8] [--theta 0]

SRC is a float checkpoint written by `sdllm.models.train_default` (default: the embedded
default model). γ is calibrated per quantisation point on the training split of the
stdlib's pydoc topics.
"""

import argparse
import os
import sys

import torch

from sdllm.cli import guarded
from sdllm.errors import SdllmError
from sdllm.models import checkpoint
from sdllm.models.corpus import pydoc_bytes, split, windows
from sdllm.models.llama import Llama
from sdllm.models.sdllm import QuantSpec, convert

DEFAULT_FLOAT = os.path.join(os.path.dirname(__file__), "default", "float.pt")
FLOAT_FORMAT = "sdllm-float-llama"
BIT_LIMITS = {"weight_bits": (2, 8), "act_bits": (2, 8), "kv_bits": (2, 8)}


def load_float(path: str) -> Llama:
    blob = checkpoint.load_blob(path, FLOAT_FORMAT)
    if blob.get("format_version") != 1:
        raise SdllmError(f"{path}: float checkpoint format_version {blob.get('format_version')!r} is not supported (reads 1)")
    return Llama.from_float_state(blob)


def calibration_tokens(seq_len: int, n_windows: int):
    train, _ = split(pydoc_bytes())
    rows = windows(train, seq_len)
    step = max(1, len(rows) // n_windows)
    return torch.from_numpy(rows[::step][:n_windows])


def check_spec(spec: QuantSpec) -> None:
    for field, (lo, hi) in BIT_LIMITS.items():
        value = getattr(spec, field)
        if not lo <= value <= hi:
            raise SdllmError(f"--{field.replace('_', '-')}: must be within {lo}..{hi}, got {value}")
    if not 0 <= spec.theta < (1 << (spec.act_bits - 1)) - 1:
        raise SdllmError(f"--theta: must be within 0..{(1 << (spec.act_bits - 1)) - 2} for {spec.act_bits}-bit spikes, got {spec.theta}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sdllm-convert", description="Convert a float LLaMA checkpoint into an SDLLM model.pt.")
    ap.add_argument("src", nargs="?", default=DEFAULT_FLOAT, help="float checkpoint (default: the embedded default model)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--weight-bits", type=int, default=4)
    ap.add_argument("--act-bits", type=int, default=4, help="activation bits b; spike trains take T = 2**(b-1)-1 steps")
    ap.add_argument("--kv-bits", type=int, default=8)
    ap.add_argument("--theta", type=int, default=0, help="membrane dead zone: |q| <= theta sends no spike")
    ap.add_argument("--calib-windows", type=int, default=16)
    args = ap.parse_args(argv)

    def body():
        spec = QuantSpec(args.weight_bits, args.act_bits, args.kv_bits, args.theta)
        check_spec(spec)
        model = load_float(args.src)
        blob = convert(model, spec, calibration_tokens(model.cfg.max_seq_len, args.calib_windows))
        checkpoint.save(blob, args.output)
        print(f"wrote {args.output}: W{spec.weight_bits}A{spec.act_bits} (KV {spec.kv_bits} bits), "
              f"T = {spec.timesteps} timesteps per spike train")

    return guarded("sdllm-convert", body)


if __name__ == "__main__":
    sys.exit(main())
