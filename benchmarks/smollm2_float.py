"""SmolLM2-135M-Instruct imported from its Q4_1 GGUF: load time and float perplexity on held-out
pydoc topics (the last 40%, 256-token windows), the baseline issue 3's SDLLM figures compare to.

    .venv/bin/python benchmarks/smollm2_float.py [--windows 8]

Needs `transformers` (dev extra) for the GGUF's tokenizer, and scripts/fetch_smollm2.sh.
"""

import argparse
import math
import os
import subprocess
import time

import torch
import torch.nn.functional as F

from sdllm.models.corpus import pydoc_bytes
from sdllm.models.importers import load_gguf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "fetch_smollm2.sh")
    gguf_path = subprocess.run([script], check=True, capture_output=True, text=True).stdout.strip()
    torch.set_num_threads(2)
    t0 = time.time()
    model = load_gguf(gguf_path, max_seq_len=256)
    print(f"import {os.path.basename(gguf_path)}: {time.time() - t0:.1f} s; {model.cfg}")

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    text = pydoc_bytes().decode("utf-8")
    ids = tok(text[int(len(text) * 0.6):])["input_ids"]
    rows = torch.tensor(ids[: len(ids) // 256 * 256]).reshape(-1, 256)
    rows = rows[:: max(1, len(rows) // args.windows)][: args.windows]
    t0 = time.time()
    with torch.no_grad():
        logits = model(rows)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
    print(f"float perplexity, {rows.shape[0]} windows of 256 tokens: {math.exp(loss.item()):.2f} "
          f"(forward {time.time() - t0:.2f} s)")


if __name__ == "__main__":
    main()
