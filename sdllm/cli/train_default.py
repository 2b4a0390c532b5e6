"""Train the embedded default model on the stdlib's pydoc topics (deterministic, CPU; ~11 min).

    python -m sdllm.cli.train_default -o models/default/float.pt
"""

import argparse
import sys

from sdllm.cli import guarded


def main(argv=None):
    return guarded("train_default", lambda: _main(argv), process=argv is None)


def _main(argv):
    ap = argparse.ArgumentParser(prog="python -m sdllm.cli.train_default", description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="models/default/float.pt")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from sdllm.formats.model import save_blob
    from sdllm.models.source.train_default import held_out_perplexity, train

    torch.set_num_threads(2)
    model = train(args.steps, args.batch, args.lr, args.seed)
    print(f"held-out perplexity (per byte): {held_out_perplexity(model):.3f}")
    save_blob(model.float_state(), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
