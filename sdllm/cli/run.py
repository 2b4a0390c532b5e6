"""sdllm-run build/ --prompt "..." [--chat] [--temperature T --top-k K --top-p P --seed S] [--report DIR]
sdllm-run build/ --interactive [--chat]
sdllm-run build/ --batch prompts.txt [--chat]

Generates on a backend, printing the tokens as they are produced, then the run's figures
(timesteps, SOPs, NoC traffic, energy); --report DIR writes the run report (run.html, run.json).
--batch runs a file's prompts (one per line) side by side in one pipeline and prints each one's
text, then the batch's timesteps against running them one after another.
"""

import argparse
import sys

from sdllm import outputs
from sdllm.cli import guarded
from sdllm.errors import SdllmError

INTERACTIVE_PROMPT = "> "


def print_result(build, prompt_tokens, result, wall_s: float, out=sys.stdout, generated: bool = True) -> None:
    """The run's figures; generated=False when the text has already been streamed."""
    from sdllm.runtime import energy
    from sdllm.tokenizer import decode

    est = energy.estimate(build, result)
    n_pos = len(result.logits)
    if generated:
        print(f"prompt:    {decode(build.tokenizer, prompt_tokens)!r}", file=out)
        print(f"generated: {decode(build.tokenizer, result.tokens[len(prompt_tokens):])!r}", file=out)
    s = build.schedule
    n_prompt = min(len(prompt_tokens), n_pos)
    print(f"timesteps: {result.timesteps} (the prompt's {n_prompt} positions an interval of {s.interval} apart, then "
          f"{s.period} per token; {n_pos} positions), wall {wall_s:.1f} s "
          + (f"({1e3 * wall_s / max(result.timesteps, 1):.2f} ms per simulated step)" if result.stepped
             else "(fast executor: computed, not stepped)"), file=out)
    per = result.sops_per_token()
    print(f"SOPs per token: mean {est['sops_per_token']:,.0f} (min {int(per.min()):,}, max {int(per.max()):,}; "
          f"{est['graded_sops_per_token']:,.0f} of them graded)", file=out)
    if result.traffic is not None:
        print(f"NoC per token: {est['packets_per_token']:,.0f} packets, {est['packet_hops_per_token']:,.0f} packet-hops, "
              f"{est['chip_crossings_per_token']:,.0f} chip crossings", file=out)
    print(f"energy estimate per token: {est['energy_per_token_uj']:.2f} uJ "
          f"({est['sop_energy_nj']:.0f} nJ synaptic ops + {est['neuron_energy_nj']:.0f} nJ neuron updates"
          f" + {est['noc_energy_nj']:.0f} nJ NoC{'' if result.traffic is not None else ' (not counted by this backend)'}); "
          f"latency {est['latency_per_token_ms']:.2f} ms per generated token, {est['prompt_interval_ms']:.3f} ms per "
          f"prompt token, at the config's step time", file=out)
    sdllm = max(est["sdllm_45nm_uj"], 1e-12)
    print(f"45 nm estimate (Horowitz 2014): SDLLM {est['sdllm_45nm_uj']:.2f} uJ vs the dense model's "
          f"{est['dense_macs_per_token']:,.0f} MACs at FP32 {est['dense_fp32_45nm_uj']:.2f} uJ (x{est['dense_fp32_45nm_uj'] / sdllm:.1f}), "
          f"FP16 {est['dense_fp16_45nm_uj']:.2f} (x{est['dense_fp16_45nm_uj'] / sdllm:.1f}), INT8 {est['dense_int8_45nm_uj']:.2f} "
          f"(x{est['dense_int8_45nm_uj'] / sdllm:.1f}), as an integer ANN {est['integer_ann_45nm_uj']:.2f} "
          f"(x{est['integer_ann_45nm_uj'] / sdllm:.1f}); a dense accelerator also reads its "
          f"{est['weight_bytes_per_token'] / 1e6:,.1f} MB of weights per token: {est['weights_sram_45nm_uj']:.2f} uJ from SRAM, "
          f"{est['weights_dram_45nm_uj']:.1f} uJ from DRAM", file=out)


def main(argv=None):
    return guarded("sdllm-run", lambda: _main(argv), process=argv is None)


def _main(argv):
    from sdllm.runtime.requests import BACKENDS, GRANULARITIES

    ap = argparse.ArgumentParser(prog="sdllm-run", description="Run a compiled SDLLM build directory.")
    ap.add_argument("build", help="build directory written by sdllm-compile")
    ap.add_argument("--prompt", help="the prompt text (with --chat: the user's message)")
    ap.add_argument("--chat", action="store_true", help="put the prompt through the model's own chat template")
    ap.add_argument("--batch", metavar="FILE",
                    help="a UTF-8 text file of prompts, one per line (blank lines skipped), run side by side in one pipeline")
    ap.add_argument("--interactive", action="store_true",
                    help="a prompt loop on standard input (with --chat: one conversation); an empty line or EOF ends it")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); above: sampling")
    ap.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    ap.add_argument("--top-p", type=float, default=1.0, help="sample among the most likely tokens up to this probability")
    ap.add_argument("--seed", type=int, default=0, help="of the sampling: the same tokens for a seed, on every backend")
    ap.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-sequence token")
    ap.add_argument("--backend", choices=BACKENDS, default="lava",
                    help="lava: Lava processes on Loihi2SimCfg('fixed_pt'); lockstep: the same cores in one process; "
                         "fast: without stepping, a window at once, through the build's tables folded per stage")
    ap.add_argument("--granularity", choices=GRANULARITIES, default="auto",
                    help="lava: one process per core or per chip (auto: per core up to 32 cores)")
    ap.add_argument("--report", metavar="DIR", help="write the run report (run.html, run.json) into DIR")
    args = ap.parse_args(argv)

    import sdllm

    if sum((args.prompt is not None, args.interactive, args.batch is not None)) != 1:
        raise SdllmError("sdllm-run: give --prompt TEXT, --batch FILE or --interactive (one of them)")
    if args.report is not None:
        if args.prompt is None:
            raise SdllmError(f"--report: writes the report of one --prompt run, not of {'--batch' if args.batch else '--interactive'}")
        outputs.check_report_directory(args.report, "--report")  # before the run, not after
    build = sdllm.load_build(args.build)
    if args.chat:
        from sdllm.chat import template_of

        template_of(build.tokenizer)  # no template: the one error line, before anything runs
    options = dict(backend=args.backend, granularity=args.granularity, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, stop_at_eos=not args.ignore_eos)
    if args.interactive:
        return interactive(build, args, options)
    if args.batch is not None:
        return batch(build, read_prompts(args.batch), args.chat, args.max_new_tokens, options)
    run = generate(build, args.prompt, args.chat, args.max_new_tokens, options)
    print_result(build.network, run.prompt_tokens, run.result, run.wall_s, generated=False)
    if args.report is not None:
        paths = run.report(progress=True).write(args.report, "--report")
        print(f"run report: {', '.join(paths)}")


def generate(build, prompt, chat: bool, max_new_tokens: int, options: dict, show_prompt: bool = True):
    """One generation, its text printed as it is produced (nothing is printed before the run has
    started, so a bad request is its one error line)."""
    started = []

    def start():
        if not started:
            started.append(True)
            if show_prompt:
                print(f"prompt:    {prompt!r}" + (" (the model's chat template applied)" if chat else ""))
                print("generated: ", end="")

    def show(text):
        start()
        print(text, end="", flush=True)

    run = build.run(prompt, max_new_tokens, chat=chat, on_text=show, **options)
    start()
    print("  [end of sequence]" if run.stopped_at_eos else "", flush=True)
    return run


def read_prompts(path: str) -> list:
    """A --batch file's prompts: its non-blank lines."""
    from sdllm.formats.files import read_text

    prompts = [line for line in read_text(path).splitlines() if line.strip()]
    if not prompts:
        raise SdllmError(f"--batch: {path} holds no prompt (one per line), got an empty file")
    return prompts


def batch(build, prompts: list, chat: bool, max_new_tokens: int, options: dict, out=sys.stdout) -> None:
    """Run the prompts side by side; print each one's text, then the batch's steps against one
    prompt after another (the same schedule, unbatched)."""
    from sdllm.schedule import Timeline

    runs = build.run_batch(prompts, max_new_tokens, chat=chat, **options)
    for i, (prompt, run) in enumerate(zip(prompts, runs)):
        end = "  [end of sequence]" if run.stopped_at_eos else ""
        print(f"prompt {i + 1}:  {prompt!r}" + (" (the model's chat template applied)" if chat else ""), file=out)
        print(f"generated: {run.text!r}{end}", file=out)
    s = build.network.schedule
    steps = max(r.timesteps for r in runs)
    alone = sum(Timeline.of(s, len(r.prompt_tokens), len(r.logits)).total for r in runs)
    new = sum(len(r.generated) for r in runs)
    step_s = build.network.hw.timestep_us * 1e-6
    print(f"batch: {len(runs)} prompts, {new} new tokens in {steps:,} timesteps; one after another {alone:,} "
          f"(x{alone / max(steps, 1):.2f}); {new / (steps * step_s):,.0f} new tokens/s at the config's step time; "
          f"wall {runs[0].wall_s:.1f} s", file=out)
    sops = sum(float(r.result.sops_per_token().sum()) for r in runs) / sum(len(r.logits) for r in runs)
    print(f"SOPs per token: mean {sops:,.0f} (each prompt's tokens, logits and SOPs are what it gets alone)", file=out)


def interactive(build, args, options: dict) -> None:
    """Read prompts from standard input; with --chat the conversation goes on, each turn re-run
    from its first token (the network's KV cache lives inside one run)."""
    messages = []
    while True:
        print(INTERACTIVE_PROMPT, end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line.strip():
            print(file=sys.stderr)
            return
        text = line.rstrip("\n")
        prompt = [*messages, {"role": "user", "content": text}] if args.chat else text
        try:
            run = generate(build, prompt, args.chat, args.max_new_tokens, options, show_prompt=False)
        except SdllmError as e:  # e.g. the conversation outgrew the context: say so, keep the loop
            print(f"sdllm-run: error: {e}", file=sys.stderr)
            continue
        if args.chat:
            messages = [*prompt, {"role": "assistant", "content": run.text}]
        print(f"[{len(run.generated)} tokens, {run.timesteps:,} timesteps, {run.sops_per_token:,.0f} SOPs and "
              f"{run.energy['energy_per_token_uj']:.2f} uJ per token]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
