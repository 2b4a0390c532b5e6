"""The integer reference: the oracle every compiled network must equal bit for bit.

One token at a time, exactly as the hardware runs it: each spike-driven stage is an integer
product W·q (what Σ_t W·s_t of the ternary spike train adds up to), everything between the
stages is `sdllm.models.units`. Floats appear only at the host boundary (logits out).
"""

import numpy as np

from sdllm.models.sdllm import config_of, head_params, spec_of, stage_weights, unit_params
from sdllm.models.units import DecoderLayerUnit, head_in, logits_out


class IntegerSDLLM:
    def __init__(self, blob: dict):
        self.blob = blob
        self.cfg = config_of(blob)
        self.spec = spec_of(blob)
        self.weights = stage_weights(blob)
        self.embed = blob["embed_fx"].numpy().astype(np.int64)
        self.head = head_params(blob)
        self.reset()

    def reset(self):
        c = self.cfg
        self.units = [DecoderLayerUnit(unit_params(self.blob, i), c.max_seq_len) for i in range(c.n_layers)]
        shape = (c.n_layers, c.n_kv_heads, c.max_seq_len, c.head_dim)
        self.k_cache = np.zeros(shape, np.int64)
        self.v_cache = np.zeros(shape, np.int64)

    def step(self, token: int, pos: int):
        """Process one token at position pos. Returns (logits (FRAC ints), spike counts per stage).

        The spike counts are each stage's integer input, i.e. how many ternary spikes each
        input axon carries in that stage's window (|q| spikes of sign(q)).
        """
        c = self.cfg
        if not 0 <= pos < c.max_seq_len:
            raise ValueError(f"position {pos} outside the context of {c.max_seq_len} tokens")
        group = c.n_heads // c.n_kv_heads
        spikes = {}
        h = self.embed[token]
        for i, unit in enumerate(self.units):
            w = lambda k, i=i: self.weights[f"L{i}.{k}"]  # noqa: E731
            spikes[f"L{i}.qkv"] = x = unit.attn_in(h)
            q, k, v = unit.after_qkv(w("qkv") @ x, pos)
            self.k_cache[i, :, pos] = k.reshape(c.n_kv_heads, c.head_dim)
            self.v_cache[i, :, pos] = v.reshape(c.n_kv_heads, c.head_dim)
            spikes[f"L{i}.qk"] = q
            keys = np.repeat(self.k_cache[i], group, axis=0)  # (heads, max_seq, hd)
            scores = np.einsum("hd,htd->ht", q.reshape(c.n_heads, c.head_dim), keys)
            scores[:, pos + 1 :] = 0
            spikes[f"L{i}.pv"] = p = unit.after_qk(scores, pos)
            values = np.repeat(self.v_cache[i], group, axis=0)
            spikes[f"L{i}.o"] = x = unit.after_pv(np.einsum("ht,htd->hd", p, values))
            spikes[f"L{i}.gate_up"] = x = unit.after_o(w("o") @ x)
            spikes[f"L{i}.down"] = x = unit.after_gate_up(w("gate_up") @ x)
            h = unit.after_down(w("down") @ x)
        x, ratio = head_in(h, self.head)
        spikes["head"] = x
        return logits_out(self.weights["head"] @ x, ratio, self.head), spikes

    def generate(self, prompt: list[int], n_new: int):
        """Greedy continuation. Returns (all tokens, logits per processed token, spikes per token)."""
        self.reset()
        tokens = list(prompt)
        logits, spikes = [], []
        for pos in range(len(prompt) + n_new - 1):
            out, sp = self.step(tokens[pos], pos)
            logits.append(out)
            spikes.append(sp)
            if pos + 1 >= len(tokens):
                tokens.append(int(np.argmax(out)))
        return tokens, np.stack(logits), spikes

    def stage_sops(self, spikes: dict, pos: int) -> dict:
        """Analytic synaptic operations per stage: Σ over spikes of the axon's fan-out."""
        c = self.cfg
        sops = {}
        for name, q in spikes.items():
            n = np.abs(np.asarray(q)).reshape(-1)
            if name.endswith(".qk"):
                sops[name] = int(n.sum()) * (pos + 1)
            elif name.endswith(".pv"):
                sops[name] = int(n.sum()) * c.head_dim
            else:
                sops[name] = int(n @ (self.weights[name] != 0).sum(0))
        return sops
