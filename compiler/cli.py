"""sdllm-compile model.pt --target loihi2 -o build/"""

import argparse
import sys

from sdllm.cli import guarded
from sdllm.compiler.emit import emit
from sdllm.compiler.pipeline import compile_file
from sdllm.compiler.report import format_report


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sdllm-compile", description="Compile an SDLLM model.pt for a neuromorphic target.")
    ap.add_argument("model", help="model.pt written by sdllm-convert")
    ap.add_argument("--target", default="loihi2", help="hardware config name (hw_configs/NAME.yaml) or a YAML path")
    ap.add_argument("-o", "--output", required=True, help="build directory to write")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not print the mapping report")
    args = ap.parse_args(argv)

    def body():
        report = emit(compile_file(args.model, args.target), args.output)
        if not args.quiet:
            print(format_report(report), end="")
        print(f"wrote {args.output}: {report['cores_used']} cores, {report['timesteps_per_token']} timesteps per token")

    return guarded("sdllm-compile", body)


if __name__ == "__main__":
    sys.exit(main())
