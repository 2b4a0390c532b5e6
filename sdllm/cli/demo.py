"""sdllm-demo: the whole pipeline on the embedded default model, checked end to end.

convert (W4A4, γ calibrated on text) -> compile for Loihi 2 (mapping report) -> held-out
perplexity (float / fake-quant / integer) -> generate on Lava -> compare with the integer
reference bit for bit -> plot SOPs per core, and the run report (out/run_report/run.html).
"""

import argparse
import os
import sys

from sdllm.cli import guarded
from sdllm.errors import SdllmError


def plot_sops(result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.core_sops)
    values = [int(v.sum()) / len(v) for v in result.core_sops.values()]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar(range(len(names)), values)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("synaptic ops per token")
    ax.set_title("SOPs per core per token (Lava run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main(argv=None):
    return guarded("sdllm-demo", lambda: _demo(_args(argv)), process=argv is None)


def _args(argv):
    ap = argparse.ArgumentParser(prog="sdllm-demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out", help="working directory for model.pt and the build")
    ap.add_argument("--prompt", default="The if statement")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--act-bits", type=int, default=4)
    return ap.parse_args(argv)


def _demo(args) -> int:
    import numpy as np

    import sdllm
    from sdllm import stages
    from sdllm.cli.run import print_result
    from sdllm.models.evaluation.evaluate import evaluate
    from sdllm.models.source.importers import default_float, load_float
    from sdllm.schedule import Timeline

    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise SdllmError(f"--out {args.out}: cannot create it ({e.strerror})") from None
    model_path, build_dir = os.path.join(args.out, "model.pt"), os.path.join(args.out, "build")
    print("== 1. convert the embedded default model to an SDLLM")
    model = sdllm.convert(act_bits=args.act_bits, progress=True)
    model.save(model_path)
    print(f"wrote {model_path}: {model.quant.describe()}")

    print("\n== 2. compile for Loihi 2")
    build = sdllm.compile(model, "loihi2", build_dir)
    print(build.report.text, end="")

    print("\n== 3. held-out perplexity per byte (last 10% of pydoc topics)")
    r = evaluate(model.file, load_float(default_float()), n_windows=8)
    print(f"  float {r['float']:.3f} | fake-quant SDLLM {r['fake_quant']:.3f} | integer SDLLM {r['integer']:.3f} "
          f"({r['tokens']} tokens; {r['spikes_per_token']:.0f} spikes and {r['sops_per_token']:,.0f} SOPs per token)")

    print("\n== 4. generate on Lava (Loihi2SimCfg fixed_pt), one Lava process per core")
    run = build.run(args.prompt, args.max_new_tokens, backend="lava", progress=True)
    prompt, result = run.prompt_tokens, run.result
    print_result(build.network, prompt, result, run.wall_s)

    print("\n== 5. check against the integer reference")
    ref = model.reference()
    tokens, logits, spikes = ref.generate(prompt, args.max_new_tokens)
    schedule = build.network.schedule
    analytic = np.array([sum(ref.stage_sops(s, pos, lambda node: schedule.stages[node].code).values())
                         for pos, s in enumerate(spikes)])
    synaptic = [v for c in build.network.cores if c.type in stages.SYNAPTIC_CORES for v in [result.core_sops[c.name]]]
    same_tokens = tokens == result.tokens
    same_logits = np.array_equal(logits, result.logits)
    same_sops = np.array_equal(analytic, np.sum(synaptic, axis=0))
    same_steps = result.timesteps == Timeline.of(schedule, len(prompt), len(logits)).done(len(logits) - 1)
    for what, ok in (("tokens", same_tokens), ("logits (bit for bit)", same_logits),
                     ("SOPs per token (= events x fan-out, in each stage's code)", same_sops),
                     ("timesteps = compiled schedule (pipelined prompt)", same_steps)):
        print(f"  {what:<58} {'EQUAL' if ok else 'DIFFERENT'}")
    plot = os.path.join(args.out, "sops_per_core.png")
    plot_sops(result, plot)
    print(f"\nplot: {plot}")
    paths = run.report().write(os.path.join(args.out, "run_report"))
    print(f"run report: {', '.join(paths)}")
    return 0 if (same_tokens and same_logits and same_sops and same_steps) else 1


if __name__ == "__main__":
    sys.exit(main())
