"""The integer reference: the oracle every compiled network must equal bit for bit.

Each spike-driven stage is an integer product W·q (what Σ_t W·s_t of the ternary spike train
adds up to), everything between the stages is `sdllm.models.units`; the stages run in the
order of the stage table (`sdllm.stages`). Floats appear only at the host boundary (logits
out). `forward` runs a block of tokens at once, as a prompt or a teacher-forced window; `step`
is one token. Both give the same integers: the unit programs are row-wise, and the products run
in float BLAS only where every partial sum is an integer below 2**24 (float32) or 2**53
(float64), so they are exact.
"""

import numpy as np

from sdllm import stages
from sdllm.errors import OutOfRange
from sdllm.formats.model import ModelFile
from sdllm.models import fixedpoint as fx
from sdllm.models.float_ops import FloatNonlinearities
from sdllm.models.llama import rope_tables
from sdllm.models.units import DecoderLayerUnit, head_in, head_params, logits_out, unit_params


def exact_float_type(bound: int):
    """The narrowest float type whose integers are exact up to `bound` (the largest |partial sum|)."""
    if bound < 1 << 24:
        return np.float32
    if bound < 1 << 53:
        return np.float64
    raise OutOfRange(f"integer product bound {bound} exceeds float64's exact range")


class IntegerSDLLM:
    def __init__(self, model: ModelFile, float_ops=()):
        """float_ops: nonlinearities to run in float instead (`sdllm.models.float_ops`), to measure their cost."""
        self.model = model
        cfg = model.config
        weights = {name: model.weight(name).astype(np.int64) for name in stages.static_shapes(cfg)}
        self._setup(cfg, model.quant, weights, model.embed_fx, head_params(model),
                    [unit_params(model, i) for i in range(cfg.n_layers)], float_ops)

    @classmethod
    def from_parts(cls, cfg, spec, weights: dict, embed, head: dict, layer_params: list) -> "IntegerSDLLM":
        """The same forward over weights, unit parameters and head parameters from elsewhere
        (the runtime's fast executor: from a build directory)."""
        self = cls.__new__(cls)
        self.model = None
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
        self.kv_type = {stages.NodeKind.KV_QK: exact_float_type(q_max * kv_max * cfg.head_dim),
                        stages.NodeKind.KV_PV: exact_float_type(q_max * kv_max * cfg.max_seq_len)}
        self.embed = np.asarray(embed, np.int64)
        self.head = head
        self.layer_params = layer_params
        if "rope" in getattr(self.ops, "names", ()):
            cos, sin = rope_tables(cfg, cfg.max_seq_len)
            for params in self.layer_params:
                params["rope_cos"], params["rope_sin"] = cos.numpy(), sin.numpy()
        self.reset()

    def reset(self):
        c = self.cfg
        self.units = [DecoderLayerUnit(params, c.max_seq_len, self.ops) for params in self.layer_params]
        shape = (c.n_kv_heads, c.max_seq_len, c.head_dim)
        self.caches = [{s.name: np.zeros(shape, np.int64) for s in stages.LAYER if s.cache} for _ in range(c.n_layers)]

    def _static(self, name, x):
        w = self.weights_t[name]
        return (x.astype(w.dtype) @ w).astype(np.int64)

    def _kv(self, stage, cache, x, n):
        """Q·Kᵀ (query spikes against every cached key) or P·V (probability spikes against every
        cached value), per head: (n, heads·keys) or (n, heads·head_dim)."""
        c = self.cfg
        ftype = self.kv_type[stage.kind]
        mem = np.repeat(cache, c.n_heads // c.n_kv_heads, axis=0).astype(ftype)  # (heads, max_seq, hd)
        spikes = x.reshape(n, c.n_heads, -1).swapaxes(0, 1).astype(ftype)  # (heads, n, hd or max_seq)
        acc = spikes @ (mem.swapaxes(1, 2) if stage.kind is stages.NodeKind.KV_QK else mem)
        return acc.swapaxes(0, 1).astype(np.int64)

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
        n, nkv, hd = len(tokens), c.n_kv_heads, c.head_dim
        spikes = {}
        h = self.embed[tokens]
        program, (first,) = stages.LAYER_INPUT
        for i, unit in enumerate(self.units):
            acts = {first.name: getattr(unit, program)(h)}
            for stage in stages.LAYER:
                x = spikes[stage.node(i)] = acts[stage.input.name]
                if stage.static:
                    acc = self._static(stage.node(i), x)
                else:
                    cache = self.caches[i][stage.name]
                    cache[:, pos] = np.moveaxis(acts[stage.cache.name].reshape(n, nkv, hd), 0, 1)
                    acc = self._kv(stage, cache, x, n)
                    if trace is not None and stage.kind is stages.NodeKind.KV_PV:
                        trace[f"L{i}.attn"] = (x, unit.p_top, unit.p_total)
                out = unit.run(stage, acc.reshape(n, -1) if stage.kind is stages.NodeKind.KV_PV else acc, pos)
                if stage.produces:
                    acts.update(zip((p.name for p in stage.produces), out))
                else:
                    h = out
            if trace is not None:
                trace[f"L{i}.resid"] = h
        x, ratio = head_in(h, self.head, self.ops)
        spikes[stages.HEAD.name] = x
        return logits_out(self._static(stages.HEAD.name, x), ratio, self.head), spikes

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
        """Analytic synaptic operations per stage: Σ over spikes of the axon's fan-out (the stage
        table's SOP rule). spikes per stage (..., n) with pos matching the leading axes."""
        pos = np.asarray(pos)
        sops = {}
        for name, q in spikes.items():
            n = np.abs(np.asarray(q))
            stage = stages.stage_of(name)
            fan = stage.fanout(self.cfg, self.fanout.get(name), pos)
            sops[name] = n @ fan if stage.static else n.reshape(*n.shape[: pos.ndim], -1).sum(-1) * fan
        return sops
