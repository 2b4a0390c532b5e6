"""sdllm-convert: a float LLaMA-family checkpoint -> an SDLLM model.pt.

    sdllm-convert [SRC] -o model.pt [--weight-bits 4] [--act-bits 4] [--attn-bits 8] [--kv-bits 8]
                  [--point-bits POINT=BITS ...] [--theta 0]
                  [--max-seq-len N] [--no-rotate] [--no-head-rotation]
                  [--rotation learned|hadamard] [--rotation-steps 100] [--rotation-from MODEL_PT]
                  [--balance 0.5] [--rtn] [--gamma-one] [--seed 0] [--wide-channels 0]
                  [--budget R [--budget-windows 4] [--target HW]]

SRC is a float checkpoint written by `sdllm.models.source.train_default` (default: the embedded default
model), a Hugging Face LLaMA-family directory (config.json + safetensors + tokenizer.json) or a
GGUF file. --budget R chooses bits per point and per layer (the flags' bits upwards: 8 bits where
it pays) for the least SOPs per token (with --target, the hw config's energy) at perplexity <= R x float
on windows of the calibration text the conversion did not fit to (`sdllm.models.conversion.budget`); with --target the choice must also fit
the target's cores (raised weights dropped where they do not, `sdllm.models.conversion.target_fit`).
A budget no allocation reaches, or none found that fits, is an error line (exit code 2). γ, GPTQ,
the learned rotation and the channel balancing are calibrated on a mixture of prose that ships with
Python (windows taken in turn from pydoc topics before the held-out part, IDLE's user manual, its
release notes, its readmes and Python's licence; never docstrings, the out-of-domain text:
`sdllm.models.source.corpus`), or on your own text with --calib-text. The progress log and model.pt
name the text used.
"""

import argparse
import sys

from sdllm import stages
from sdllm.cli import guarded
from sdllm.errors import SdllmError

DEFAULT_SEQ_LEN = 256


def point_bits(pairs: list) -> tuple:
    """--point-bits down=8 ... -> (("down", 8), ...)."""
    out = {}
    for pair in pairs:
        name, _, bits = pair.partition("=")
        if name not in stages.POINTS or not bits.isdecimal():  # not isdigit: "²" is a digit int() refuses
            raise SdllmError(f"--point-bits: expected POINT=BITS with POINT one of {', '.join(stages.POINTS)}, got {pair!r}")
        out[name] = int(bits)
    return tuple(sorted(out.items()))


def main(argv=None):
    return guarded("sdllm-convert", lambda: _main(argv), process=argv is None)


def _main(argv):
    from sdllm.formats.model import ROTATIONS, QuantSpec
    from sdllm.models.source.corpus import CALIBRATION_WINDOWS

    ap = argparse.ArgumentParser(prog="sdllm-convert", description="Convert a float LLaMA-family checkpoint into an SDLLM model.pt.")
    ap.add_argument("src", nargs="?", help="our float .pt (default: the embedded default model), a Hugging Face directory or a .gguf")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--weight-bits", type=int, default=4)
    ap.add_argument("--act-bits", type=int, default=4, help="bits of every linear layer's input (ternary trains of "
                    "T = 2**(b-1)-1 steps up to 4 bits, bit planes of b-1 steps above)")
    ap.add_argument("--attn-bits", type=int, default=8, help="bits of the queries and attention probabilities "
                    "(--attn-bits 4: the paper's 4-bit trains there too)")
    ap.add_argument("--kv-bits", type=int, default=8, help="bits of the keys and values written into the KV synapses")
    ap.add_argument("--point-bits", nargs="+", default=[], metavar="POINT=BITS",
                    help=f"mixed precision: bits of single quantisation points ({', '.join(stages.POINTS)}), e.g. down=8")
    ap.add_argument("--theta", type=int, default=0, help="membrane dead zone: |q| <= theta sends no spike")
    ap.add_argument("--clip-budget", type=float, default=0.0, metavar="FRACTION",
                    help="calibrate a dead zone per quantisation point, letting calibration perplexity grow by at most "
                         "this fraction (e.g. 0.02), to cut synaptic operations where it is cheap")
    ap.add_argument("--max-seq-len", type=int, help=f"context (KV cache) of the SDLLM (default: {DEFAULT_SEQ_LEN} for "
                    "pretrained models or their positions if fewer, the checkpoint's own for ours)")
    ap.add_argument("--no-rotate", action="store_true", help="no Hadamard rotation (ablation)")
    ap.add_argument("--no-head-rotation", action="store_true",
                    help="no randomised Hadamard on each head's values, fused into v_proj/o_proj (ablation)")
    ap.add_argument("--rotation", choices=ROTATIONS, default=QuantSpec.rotation,
                    help="learned (default): optimised from the seeded randomised Hadamards on the calibration text "
                         "(SpinQuant's Cayley SGD against the fake-quant model's KL to the float model); hadamard: "
                         "those Hadamards as they are (faster to convert)")
    ap.add_argument("--rotation-steps", type=int, default=QuantSpec.rotation_steps,
                    help="Cayley SGD steps of --rotation learned")
    ap.add_argument("--rotation-from", metavar="MODEL_PT",
                    help="use the learned rotation of this model.pt (of the same float model) instead of learning one")
    ap.add_argument("--balance", type=float, default=QuantSpec.balance, metavar="ALPHA",
                    help="channel balancing of down_proj's and o_proj's inputs: scales (|w_j| / rms(x_j))**ALPHA "
                         "folded into up/down and v/o (0: none)")
    ap.add_argument("--wide-channels", type=int, default=0, metavar="G",
                    help="a high-precision channel group: the learned rotation puts the residual's G highest-variance "
                         "directions first, and the points reading it carry those G channels at 8 bits with the same "
                         "per-token step as the rest (e.g. dim/8; 0: none)")
    ap.add_argument("--rtn", action="store_true", help="round-to-nearest weights instead of GPTQ (ablation)")
    ap.add_argument("--gamma-one", action="store_true", help="γ = 1: per-token max scaling (ablation)")
    ap.add_argument("--seed", type=int, default=0, help="of the random rotation")
    ap.add_argument("--calib-windows", type=int, default=CALIBRATION_WINDOWS,
                    help="calibration windows of max_seq_len tokens (default text: taken in turn from each kind of "
                         "the python-prose mixture, pydoc topics, IDLE's manual, release notes, readmes and licence)")
    ap.add_argument("--calib-text", nargs="+", default=[], metavar="FILE",
                    help="calibrate on your own text (UTF-8 files, or JSON lines with a \"text\" field) instead of "
                         "the default mixture of prose that ships with Python")
    ap.add_argument("--budget", type=float, metavar="R",
                    help="choose bits per point and per layer for the least energy at calibration perplexity <= R x float")
    ap.add_argument("--budget-windows", type=int, default=4, help="windows of the calibration text, beside those the conversion fits to, that the budget search ranks its "
                    "candidates on; as many others measure its choice")
    ap.add_argument("--target", help="with --budget: price energy with this hw config (name or path) instead of SOPs, "
                    "and fit the choice to its cores (8-bit weights take twice the synapse memory: raised weights are "
                    "dropped where they do not fit; an error if nothing within the budget fits)")
    args = ap.parse_args(argv)

    import sdllm
    from sdllm import outputs

    outputs.check_file(args.output, "-o")  # before any work
    spec = QuantSpec(weight_bits=args.weight_bits, act_bits=args.act_bits, attn_bits=args.attn_bits,
                     kv_bits=args.kv_bits, theta=args.theta, point_bits=point_bits(args.point_bits),
                     clip_budget=args.clip_budget,
                     rotate=not args.no_rotate, head_rotation=not args.no_head_rotation, rotation=args.rotation,
                     rotation_steps=args.rotation_steps, balance=args.balance, gptq=not args.rtn,
                     calibrate_gamma=not args.gamma_one, seed=args.seed, wide_channels=args.wide_channels)
    model = sdllm.convert(args.src, spec, max_seq_len=args.max_seq_len, calib_windows=args.calib_windows,
                          calib_text=args.calib_text, progress=True, rotation_from=args.rotation_from,
                          budget=args.budget, budget_windows=args.budget_windows, target=args.target)
    model.save(args.output)
    print(f"wrote {args.output}: {model.quant.describe()} ({model.quant.precision()}), context {model.config.max_seq_len} tokens")
    b = model.file.budget
    if b:
        print(f"budget {b['budget']:g}: calibration perplexity {b['measured_ratio']:.3f} x float (predicted "
              f"{b['predicted_ratio']:.3f}); {b['energy']:,.0f} {b['objective']} per token = "
              f"{b['energy'] / b['default_energy']:.3f} x the uniform {spec.describe()}'s ({b['default_ratio']:.3f} x float)")
        if b["cores_available"]:
            print(f"cores needed on {b['target']}: {b['fit']}")


if __name__ == "__main__":
    sys.exit(main())
