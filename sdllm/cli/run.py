"""sdllm-run build/ --prompt "..." --backend lava"""

import argparse
import sys
import time

from sdllm.cli import guarded


def print_result(build, prompt_tokens, result, wall_s: float, out=sys.stdout) -> None:
    from sdllm.runtime import energy
    from sdllm.tokenizer import decode

    text = decode(build.tokenizer, result.tokens[len(prompt_tokens):])
    est = energy.estimate(build, result)
    n_pos = len(result.logits)
    print(f"prompt:    {decode(build.tokenizer, prompt_tokens)!r}", file=out)
    print(f"generated: {text!r}", file=out)
    print(f"timesteps: {result.timesteps} ({build.schedule['period']} per token x {n_pos} positions), "
          f"wall {wall_s:.1f} s " + (f"({1e3 * wall_s / max(result.timesteps, 1):.2f} ms per simulated step)" if result.stepped
                                     else "(fast executor: computed, not stepped)"), file=out)
    per = result.sops_per_token()
    print(f"SOPs per token: mean {est['sops_per_token']:,.0f} (min {int(per.min()):,}, max {int(per.max()):,})", file=out)
    if result.traffic is not None:
        print(f"NoC per token: {est['packets_per_token']:,.0f} packets, {est['packet_hops_per_token']:,.0f} packet-hops, "
              f"{est['chip_crossings_per_token']:,.0f} chip crossings", file=out)
    print(f"energy estimate per token: {est['energy_per_token_uj']:.2f} uJ "
          f"({est['sop_energy_nj']:.0f} nJ synaptic ops + {est['neuron_energy_nj']:.0f} nJ neuron updates"
          f" + {est['noc_energy_nj']:.0f} nJ NoC{'' if result.traffic is not None else ' (not counted by this backend)'}); "
          f"latency {est['latency_per_token_ms']:.2f} ms at the config's step time", file=out)
    print(f"45 nm estimate (Horowitz 2014): SDLLM {est['sdllm_45nm_uj']:.2f} uJ ({est['sops_per_token']:,.0f} SOPs x 0.9 pJ) vs "
          f"the dense model's {est['dense_macs_per_token']:,.0f} MACs: {est['dense_fp32_45nm_uj']:.2f} uJ at FP32 "
          f"(x{est['dense_fp32_45nm_uj'] / max(est['sdllm_45nm_uj'], 1e-12):.1f}), {est['dense_fp16_45nm_uj']:.2f} uJ at FP16 "
          f"(x{est['dense_fp16_45nm_uj'] / max(est['sdllm_45nm_uj'], 1e-12):.1f})", file=out)


def main(argv=None):
    return guarded("sdllm-run", lambda: _main(argv))


def _main(argv):
    from sdllm.runtime.backends import BACKENDS

    ap = argparse.ArgumentParser(prog="sdllm-run", description="Run a compiled SDLLM build directory.")
    ap.add_argument("build", help="build directory written by sdllm-compile")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--backend", choices=BACKENDS, default="lava",
                    help="lava: Lava processes on Loihi2SimCfg('fixed_pt'); lockstep: the same cores in one process; "
                         "fast: without stepping, a window at once, through the build's tables folded per stage")
    ap.add_argument("--granularity", choices=("auto", "core", "chip"), default="auto",
                    help="lava: one process per core or per chip (auto: per core up to 32 cores)")
    args = ap.parse_args(argv)

    from sdllm.formats import build as buildformat
    from sdllm.runtime.backends import run
    from sdllm.tokenizer import encode

    build = buildformat.read(args.build)
    prompt_tokens = encode(build.tokenizer, args.prompt)
    t0 = time.time()
    result = run(build, prompt_tokens, args.max_new_tokens, args.backend, args.granularity, progress=True)
    print_result(build, prompt_tokens, result, time.time() - t0)


if __name__ == "__main__":
    sys.exit(main())
