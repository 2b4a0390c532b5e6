"""The integer reference: the oracle every compiled network must equal bit for bit.

Each spike-driven stage is an integer product W·q (what Σ_t W·s_t of the ternary spike train
adds up to), everything between the stages is `sdllm.models.units`. Floats appear only at the
host boundary (logits out). `forward` runs a block of tokens at once, as a prompt or a
teacher-forced window; `step` is one token. Both give the same integers: the unit programs
are row-wise, and the products run in float BLAS only where every partial sum is an integer
below 2**24 (float32) or 2**53 (float64), so they are exact.
"""

import numpy as np

from sdllm.models import fixedpoint as fx
from sdllm.models.float_ops import FloatNonlinearities
from sdllm.models.llama import rope_tables
from sdllm.models.sdllm import config_of, head_params, spec_of, stage_weights, unit_params
from sdllm.models.units import DecoderLayerUnit, head_in, logits_out


def exact_float_type(bound: int):
    """The narrowest float type whose integers are exact up to `bound` (the largest |partial sum|)."""
    if bound < 1 << 24:
        return np.float32
    if bound < 1 << 53:
        return np.float64
    raise OverflowError(f"integer product bound {bound} exceeds float64's exact range")


class IntegerSDLLM:
    def __init__(self, blob: dict, float_ops=()):
        """float_ops: nonlinearities to run in float instead (`sdllm.models.float_ops`), to measure their cost."""
        self.blob = blob
        self._setup(config_of(blob), spec_of(blob), stage_weights(blob), blob["embed_fx"].numpy(), head_params(blob),
                    [unit_params(blob, i) for i in range(blob["config"]["n_layers"])], float_ops)

    @classmethod
    def from_parts(cls, cfg, spec, weights: dict, embed, head: dict, layer_params: list) -> "IntegerSDLLM":
        """The same forward over weights, unit parameters and head parameters from elsewhere
        (the runtime's fast executor: from a build directory)."""
        self = cls.__new__(cls)
        self.blob = None
        self._setup(cfg, spec, weights, embed, head, layer_params, ())
        return self

    def _setup(self, cfg, spec, weights, embed, head, layer_params, float_ops):
        self.ops = FloatNonlinearities(float_ops) if float_ops else fx
        self.cfg, self.spec = cfg, spec
        q_max, kv_max = fx.qmax(self.spec.act_bits), fx.qmax(self.spec.kv_bits)
        self.weights_t, self.fanout = {}, {}
        for name, w in weights.items():
            ftype = exact_float_type(int(np.abs(w).max(initial=0)) * q_max * w.shape[1])
            self.weights_t[name] = np.ascontiguousarray(w.T, dtype=ftype)
            self.fanout[name] = (w != 0).sum(0)
        c = self.cfg
        self.qk_type = exact_float_type(q_max * kv_max * c.head_dim)
        self.pv_type = exact_float_type(q_max * kv_max * c.max_seq_len)
        self.embed = np.asarray(embed, np.int64)
        self.head = head
        self.layer_params = layer_params
        if "rope" in getattr(self.ops, "names", ()):
            cos, sin = rope_tables(c, c.max_seq_len)
            for params in self.layer_params:
                params["rope_cos"], params["rope_sin"] = cos.numpy(), sin.numpy()
        self.reset()

    def reset(self):
        c = self.cfg
        self.units = [DecoderLayerUnit(params, c.max_seq_len, self.ops) for params in self.layer_params]
        shape = (c.n_layers, c.n_kv_heads, c.max_seq_len, c.head_dim)
        self.k_cache = np.zeros(shape, np.int64)
        self.v_cache = np.zeros(shape, np.int64)

    def _stage(self, name, x):
        w = self.weights_t[name]
        return (x.astype(w.dtype) @ w).astype(np.int64)

    def forward(self, tokens, start: int = 0, trace: dict | None = None):
        """Tokens at positions start, start+1, ... Returns (logits (tokens, vocab) FRAC ints,
        spike counts per stage (tokens, n)): each stage's integer input, i.e. how many ternary
        spikes each input axon carries in that stage's window (|q| spikes of sign(q)).

        trace, if given, receives per layer the residual stream after it ("L{i}.resid", FRAC)
        and the attention's P·V spike counts with their normalisers ("L{i}.attn": p, top, total).
        """
        c = self.cfg
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        pos = np.arange(start, start + len(tokens))
        if start < 0 or pos[-1] >= c.max_seq_len:
            raise ValueError(f"positions {start}..{pos[-1]} outside the context of {c.max_seq_len} tokens")
        n, nh, nkv, hd = len(tokens), c.n_heads, c.n_kv_heads, c.head_dim
        group = nh // nkv
        spikes = {}
        h = self.embed[tokens]
        for i, unit in enumerate(self.units):
            spikes[f"L{i}.qkv"] = x = unit.attn_in(h)
            q, k, v = unit.after_qkv(self._stage(f"L{i}.qkv", x), pos)
            self.k_cache[i][:, pos] = np.moveaxis(k.reshape(n, nkv, hd), 0, 1)
            self.v_cache[i][:, pos] = np.moveaxis(v.reshape(n, nkv, hd), 0, 1)
            spikes[f"L{i}.qk"] = q
            keys = np.repeat(self.k_cache[i], group, axis=0).astype(self.qk_type)  # (heads, max_seq, hd)
            queries = q.reshape(n, nh, hd).swapaxes(0, 1).astype(self.qk_type)  # (heads, n, hd)
            scores = (queries @ keys.swapaxes(1, 2)).swapaxes(0, 1).astype(np.int64)  # (n, heads, max_seq)
            spikes[f"L{i}.pv"] = p = unit.after_qk(scores, pos)
            values = np.repeat(self.v_cache[i], group, axis=0).astype(self.pv_type)
            acc = (p.swapaxes(0, 1).astype(self.pv_type) @ values).swapaxes(0, 1).astype(np.int64)  # (n, heads, hd)
            if trace is not None:
                trace[f"L{i}.attn"] = (p, unit.p_top, unit.p_total)
            spikes[f"L{i}.o"] = x = unit.after_pv(acc.reshape(n, -1))
            spikes[f"L{i}.gate_up"] = x = unit.after_o(self._stage(f"L{i}.o", x))
            spikes[f"L{i}.down"] = x = unit.after_gate_up(self._stage(f"L{i}.gate_up", x))
            h = unit.after_down(self._stage(f"L{i}.down", x))
            if trace is not None:
                trace[f"L{i}.resid"] = h
        x, ratio = head_in(h, self.head, self.ops)
        spikes["head"] = x
        return logits_out(self._stage("head", x), ratio, self.head), spikes

    def step(self, token: int, pos: int):
        """One token at position pos: (logits (vocab,), spike counts per stage)."""
        logits, spikes = self.forward([token], pos)
        return logits[0], {k: v[0] for k, v in spikes.items()}

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

    def stage_sops(self, spikes: dict, pos) -> dict:
        """Analytic synaptic operations per stage: Σ over spikes of the axon's fan-out.
        spikes per stage (..., n) with pos matching the leading axes."""
        pos = np.asarray(pos)
        sops = {}
        for name, q in spikes.items():
            n = np.abs(np.asarray(q))
            if name.endswith(".qk"):
                sops[name] = n.sum(-1) * (pos + 1)
            elif name.endswith(".pv"):
                sops[name] = n.reshape(*n.shape[: pos.ndim], -1).sum(-1) * self.cfg.head_dim
            else:
                sops[name] = n @ self.fanout[name]
        return sops
