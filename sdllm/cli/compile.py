"""sdllm-compile model.pt --target loihi2 -o build/   |   sdllm-compile --synthetic llama2-7b --target hala_point -o build/"""

import argparse
import sys

from sdllm import codes
from sdllm.cli import guarded
from sdllm.errors import SdllmError

PLACEMENTS = ("traffic", "greedy")
RATE_TOKENS = 128


def main(argv=None):
    return guarded("sdllm-compile", lambda: _main(argv), process=argv is None)


def _main(argv):
    ap = argparse.ArgumentParser(prog="sdllm-compile", description="Compile an SDLLM model.pt for a neuromorphic target.")
    ap.add_argument("model", nargs="?", help="model.pt written by sdllm-convert")
    ap.add_argument("--synthetic", metavar="CONFIG",
                    help="instead of a model.pt: random int weights of a LLaMA shape (a known name such as "
                         "llama2-7b, tinyllama-1.1b, smollm2-135m, or a YAML file of LlamaConfig fields)")
    ap.add_argument("--target", default="loihi2", help="hardware config name (hw_configs/NAME.yaml) or a YAML path")
    ap.add_argument("-o", "--output", required=True, help="build directory to write")
    ap.add_argument("--placement", choices=PLACEMENTS, default="traffic",
                    help="traffic-aware placement (default) or the greedy sequential baseline")
    ap.add_argument("--rate-tokens", type=int, default=RATE_TOKENS,
                    help=f"measure spike rates for placement on this many tokens of calibration text "
                         f"(default {RATE_TOKENS}; 0: count one packet per routed value)")
    ap.add_argument("--code", default="auto", choices=codes.CHOICES,
                    help="the spike code of each stage's input: auto (the compiler's choice, least energy x latency "
                         "on the target), paper (the SDLLM paper's ternary trains), or one code everywhere")
    ap.add_argument("--weight-bits", type=int, default=4, help="--synthetic only: weight bits (default 4)")
    ap.add_argument("--act-bits", type=int, default=4, help="--synthetic only: activation bits (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="--synthetic only: of the random weights")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not print the mapping report")
    args = ap.parse_args(argv)

    import sdllm
    from sdllm import arguments
    from sdllm.formats import model as modelformat

    if (args.model is None) == (args.synthetic is None):
        raise SdllmError("sdllm-compile: give a model.pt or --synthetic CONFIG (one of them)")
    if args.synthetic:
        from sdllm import resources
        from sdllm.formats import build as buildformat
        from sdllm.models.source.synthetic import shape_of, synthetic_model

        arguments.integer("--seed", args.seed, 0, (1 << 63) - 1)  # what a model.pt holds; numpy's seeds are >= 0
        buildformat.check_target(args.output)  # before any work: the place to write it is there and ours to replace
        spec = modelformat.QuantSpec(weight_bits=args.weight_bits, act_bits=args.act_bits, rotate=False, gptq=False)
        shape = shape_of(args.synthetic)
        resources.require_memory(resources.compile_bytes(shape, True, 0), f"--synthetic {args.synthetic}")
        model = synthetic_model(shape, spec, args.seed)
    else:
        model = args.model
    build = sdllm.compile(model, args.target, args.output, placement=args.placement, rate_tokens=args.rate_tokens,
                          code=args.code, progress=True)
    report = build.report
    if not args.quiet:
        print(report.text, end="")
    print(f"wrote {args.output}: {report.cores_used:,} cores on {report.chips_used} chip(s), "
          f"{report.timesteps_per_token} timesteps per token; report.txt, report.json, report.html")


if __name__ == "__main__":
    sys.exit(main())
