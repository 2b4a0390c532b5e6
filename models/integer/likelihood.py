"""The host boundary's figure of merit: the negative log-likelihood of targets under the FRAC
fixed-point logits an SDLLM produces (perplexity = exp of its mean)."""

import numpy as np

from sdllm.models.integer import fixedpoint as fx


def nll(logits_fx, targets):
    """Negative log-likelihood of each target under FRAC fixed-point logits (tokens, vocab)."""
    z = np.asarray(logits_fx, np.float64) / (1 << fx.FRAC)
    top = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(-1)) + top[..., 0]
    return lse - np.take_along_axis(z, np.asarray(targets)[..., None], -1)[..., 0]
