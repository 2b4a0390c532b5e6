"""sdllm-convert: a float LLaMA-family checkpoint -> an SDLLM model.pt.

    sdllm-convert [SRC] -o model.pt [--weight-bits 4] [--act-bits 4] [--kv-bits 8] [--theta 0]
                  [--max-seq-len N] [--no-rotate] [--rtn] [--gamma-one] [--seed 0]

SRC is a float checkpoint written by `sdllm.models.train_default` (default: the embedded default
model), a Hugging Face LLaMA-family directory (config.json + safetensors + tokenizer.json) or a
GGUF file. γ and GPTQ are calibrated on pydoc topics text before the held-out part
(`sdllm.models.corpus`).
"""

import argparse
import sys

from sdllm.cli import guarded
from sdllm.errors import SdllmError

DEFAULT_SEQ_LEN = 256


def check_spec(spec) -> None:
    from sdllm.formats.model import BIT_RANGE, qmax

    lo, hi = BIT_RANGE
    for field in ("weight_bits", "act_bits", "kv_bits"):
        value = getattr(spec, field)
        if not lo <= value <= hi:
            raise SdllmError(f"--{field.replace('_', '-')}: must be within {lo}..{hi}, got {value}")
    if not 0 <= spec.theta < qmax(spec.act_bits):
        raise SdllmError(f"--theta: must be within 0..{qmax(spec.act_bits) - 1} for {spec.act_bits}-bit spikes, got {spec.theta}")


def main(argv=None):
    return guarded("sdllm-convert", lambda: _main(argv))


def _main(argv):
    ap = argparse.ArgumentParser(prog="sdllm-convert", description="Convert a float LLaMA-family checkpoint into an SDLLM model.pt.")
    ap.add_argument("src", nargs="?", help="our float .pt (default: the embedded default model), a Hugging Face directory or a .gguf")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--weight-bits", type=int, default=4)
    ap.add_argument("--act-bits", type=int, default=4, help="activation bits b; spike trains take T = 2**(b-1)-1 steps")
    ap.add_argument("--kv-bits", type=int, default=8)
    ap.add_argument("--theta", type=int, default=0, help="membrane dead zone: |q| <= theta sends no spike")
    ap.add_argument("--max-seq-len", type=int, help=f"context (KV cache) of the SDLLM (default: {DEFAULT_SEQ_LEN} for "
                    "pretrained models or their positions if fewer, the checkpoint's own for ours)")
    ap.add_argument("--no-rotate", action="store_true", help="no Hadamard rotation (ablation)")
    ap.add_argument("--rtn", action="store_true", help="round-to-nearest weights instead of GPTQ (ablation)")
    ap.add_argument("--gamma-one", action="store_true", help="γ = 1: per-token max scaling (ablation)")
    ap.add_argument("--seed", type=int, default=0, help="of the random rotation")
    ap.add_argument("--calib-windows", type=int, default=16)
    args = ap.parse_args(argv)

    from sdllm import outputs
    from sdllm.formats import model as modelformat
    from sdllm.formats.model import QuantSpec
    from sdllm.models.conversion import convert
    from sdllm.models.corpus import calibration_tokens
    from sdllm.models.importers import load_source

    outputs.check_file(args.output, "-o")  # before any work
    spec = QuantSpec(args.weight_bits, args.act_bits, args.kv_bits, args.theta, rotate=not args.no_rotate,
                     gptq=not args.rtn, calibrate_gamma=not args.gamma_one, seed=args.seed)
    check_spec(spec)
    if args.calib_windows < 1:
        raise SdllmError(f"--calib-windows: must be at least 1, got {args.calib_windows}")
    model, tokenizer = load_source(args.src, args.max_seq_len)
    calib = calibration_tokens(tokenizer, model.cfg.max_seq_len, args.calib_windows)
    sdllm_model = convert(model, spec, calib, tokenizer, progress=True)
    modelformat.save(sdllm_model, args.output)
    print(f"wrote {args.output}: W{spec.weight_bits}A{spec.act_bits} (KV {spec.kv_bits} bits), "
          f"T = {spec.timesteps} timesteps per spike train, context {model.cfg.max_seq_len} tokens")


if __name__ == "__main__":
    sys.exit(main())
