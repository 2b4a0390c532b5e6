"""Training of the embedded default model on the stdlib's pydoc topics (deterministic, CPU).

    python -m sdllm.cli.train_default -o models/default/float.pt

The result is committed as models/default/float.pt; rerunning the command reproduces it.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sdllm.formats.model import LlamaConfig
from sdllm.models.source.corpus import pydoc_bytes, split, windows
from sdllm.models.source.llama import Llama


def batches(train: np.ndarray, seq_len: int, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(train) - seq_len - 1, size=batch)
        chunk = np.stack([train[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])


@torch.no_grad()
def perplexity(model, held_out: np.ndarray, seq_len: int) -> float:
    x = torch.from_numpy(windows(held_out, seq_len + 1))
    logits = model(x[:, :-1])
    return math.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)).item())


def train(steps: int, batch: int, lr: float, seed: int) -> Llama:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    cfg = LlamaConfig()
    model = Llama(cfg)
    train_arr, held_out = split(pydoc_bytes())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    bar = tqdm(batches(train_arr, cfg.max_seq_len, batch, steps, seed), total=steps, desc="train")
    for step, (x, y) in enumerate(bar):
        loss = F.cross_entropy(model(x).reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def held_out_perplexity(model: Llama) -> float:
    _, held_out = split(pydoc_bytes())
    return perplexity(model, held_out, model.cfg.max_seq_len)
