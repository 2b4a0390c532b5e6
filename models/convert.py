"""sdllm-convert: a float LLaMA-family checkpoint -> an SDLLM model.pt.

    sdllm-convert [SRC] -o model.pt [--weight-bits 4] [--act-bits 4] [--kv-bits 8] [--theta 0]
                  [--max-seq-len N] [--no-rotate] [--rtn] [--gamma-one] [--seed 0]

SRC is a float checkpoint written by `sdllm.models.train_default` (default: the embedded default
model), a Hugging Face LLaMA-family directory (config.json + safetensors + tokenizer.json) or a
GGUF file. γ and GPTQ are calibrated on pydoc topics text before the held-out part
(`sdllm.models.corpus`).
"""

import argparse
import dataclasses
import os
import sys

import torch

from sdllm.cli import guarded
from sdllm.errors import SdllmError
from sdllm.models import checkpoint
from sdllm.models.corpus import calibration_windows
from sdllm.models.importers import DEFAULT_SEQ_LEN, load_pretrained, load_tokenizer
from sdllm.models.llama import Llama
from sdllm.models.sdllm import QuantSpec, convert
from sdllm.runtime.tokenizer import vocab_size

DEFAULT_FLOAT = os.path.join(os.path.dirname(__file__), "default", "float.pt")
FLOAT_FORMAT = "sdllm-float-llama"
BIT_LIMITS = {"weight_bits": (2, 8), "act_bits": (2, 8), "kv_bits": (2, 8)}
BYTES = {"type": "bytes"}


def load_float(path: str) -> Llama:
    blob = checkpoint.load_blob(path, FLOAT_FORMAT)
    if blob.get("format_version") != 1:
        raise SdllmError(f"{path}: float checkpoint format_version {blob.get('format_version')!r} is not supported (reads 1)")
    return Llama.from_float_state(blob)


def load_source(path: str | None, max_seq_len: int | None = None):
    """(float Llama, tokenizer spec) from our float .pt (default: the embedded model), a Hugging
    Face directory or a .gguf. max_seq_len: the SDLLM's context (the KV cache the chip holds)."""
    path = path or DEFAULT_FLOAT
    if max_seq_len is not None and max_seq_len < 2:
        raise SdllmError(f"--max-seq-len: must be at least 2, got {max_seq_len}")
    if os.path.isdir(path) or path.endswith(".gguf"):
        if not os.path.exists(path):
            raise SdllmError(f"{path}: no such file or directory")
        model = load_pretrained(path, max_seq_len)
        tokenizer = load_tokenizer(path)
        if vocab_size(tokenizer) > model.cfg.vocab_size:
            raise SdllmError(f"{path}: the tokenizer has {vocab_size(tokenizer)} tokens, more than the model's "
                             f"vocabulary of {model.cfg.vocab_size}")
        return model, tokenizer
    model = load_float(path)
    if max_seq_len is not None and max_seq_len != model.cfg.max_seq_len:
        if max_seq_len > model.cfg.max_seq_len:
            raise SdllmError(f"--max-seq-len: at most the model's context of {model.cfg.max_seq_len}, got {max_seq_len}")
        shorter = Llama(dataclasses.replace(model.cfg, max_seq_len=max_seq_len))
        shorter.load_state_dict(model.state_dict())
        model = shorter
    return model, BYTES


def calibration_tokens(seq_len: int, n_windows: int, tokenizer: dict = BYTES):
    return torch.from_numpy(calibration_windows(tokenizer, seq_len, n_windows))


def check_spec(spec: QuantSpec) -> None:
    for field, (lo, hi) in BIT_LIMITS.items():
        value = getattr(spec, field)
        if not lo <= value <= hi:
            raise SdllmError(f"--{field.replace('_', '-')}: must be within {lo}..{hi}, got {value}")
    if not 0 <= spec.theta < (1 << (spec.act_bits - 1)) - 1:
        raise SdllmError(f"--theta: must be within 0..{(1 << (spec.act_bits - 1)) - 2} for {spec.act_bits}-bit spikes, got {spec.theta}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sdllm-convert", description="Convert a float LLaMA-family checkpoint into an SDLLM model.pt.")
    ap.add_argument("src", nargs="?", default=DEFAULT_FLOAT,
                    help="our float .pt (default: the embedded default model), a Hugging Face directory or a .gguf")
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

    def body():
        spec = QuantSpec(args.weight_bits, args.act_bits, args.kv_bits, args.theta, rotate=not args.no_rotate,
                         gptq=not args.rtn, calibrate_gamma=not args.gamma_one, seed=args.seed)
        check_spec(spec)
        if args.calib_windows < 1:
            raise SdllmError(f"--calib-windows: must be at least 1, got {args.calib_windows}")
        model, tokenizer = load_source(args.src, args.max_seq_len)
        calib = calibration_tokens(model.cfg.max_seq_len, args.calib_windows, tokenizer)
        blob = convert(model, spec, calib, progress=True)
        blob["tokenizer"] = tokenizer
        checkpoint.save(blob, args.output)
        print(f"wrote {args.output}: W{spec.weight_bits}A{spec.act_bits} (KV {spec.kv_bits} bits), "
              f"T = {spec.timesteps} timesteps per spike train, context {model.cfg.max_seq_len} tokens")

    return guarded("sdllm-convert", body)


if __name__ == "__main__":
    sys.exit(main())
