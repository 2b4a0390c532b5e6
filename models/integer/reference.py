"""The integer reference: the oracle every compiled network must equal bit for bit.

Each spike-driven stage is an integer product W·q (what Σ_t W·s_t of the ternary spike train
adds up to), everything between the stages is `sdllm.models.integer.units`; the stages run in the
order of the stage table (`sdllm.stages`). Floats appear only at the host boundary (logits
out). `forward` runs a block of tokens at once, as a prompt or a teacher-forced window; `step`
is one token. Both give the same integers: the unit programs are row-wise (`kernels`), and the
products run in the cheapest type proven exact for them (`products`: oneDNN int8 GEMMs or
float BLAS on integer values, every partial sum below the type's exact range).
"""

import numpy as np

from sdllm import codes, stages
from sdllm.formats.model import ModelFile
from sdllm.models.integer import kernels
from sdllm.models.integer.products import ExactProduct, exact_type, float_matmul
from sdllm.models.integer.units import DecoderLayerUnit, hand_off, head_in, head_params, logits_out, unit_params


class IntegerSDLLM:
    def __init__(self, model: ModelFile, ops=None, stream: bool = False, rope=None):
        """ops: the arithmetic between stages (`kernels` by default; `fixedpoint`, its definition; or
        float stand-ins of some nonlinearities, to measure their cost). rope: (cos, sin) tables to use
        instead of the model's fixed-point ones (float RoPE).
        stream: hold no stage's product between uses — each is made from the model's int8 weights
        when the stage runs and dropped after (one forward over a window needs one stage's memory;
        no `stage_sops`)."""
        self.model, self.stream = model, stream
        cfg = model.config
        # one stage's int8 matrix at a time
        weights = () if stream else ((name, model.weight(name)) for name in stages.static_shapes(cfg))
        self._setup(cfg, model.quant, weights, model.embed_fx, head_params(model),
                    [unit_params(model, i) for i in range(cfg.n_layers)], ops)
        if rope is not None:
            for params in self.layer_params:
                params["rope_cos"], params["rope_sin"] = rope
            self.reset()

    @classmethod
    def from_parts(cls, cfg, spec, weights: dict, embed, head: dict, layer_params: list) -> "IntegerSDLLM":
        """The same forward over weights, unit parameters and head parameters from elsewhere
        (the runtime's fast executor: from a build directory)."""
        self = cls.__new__(cls)
        self.model, self.stream = None, False
        self._setup(cfg, spec, weights.items(), embed, head, layer_params, None)
        return self

    def _setup(self, cfg, spec, weights, embed, head, layer_params, ops):
        self.ops = ops or kernels
        self.cfg, self.spec = cfg, spec
        self.products, self.fanout = {}, {}
        for name, w in weights:
            self.products[name] = ExactProduct(w, self._limits(name))
            self.fanout[name] = (w != 0).sum(0)
        # a KV accumulator sums one head's inputs: head_dim for Q·Kᵀ, max_seq_len for P·V (the widest of any layer's)
        self.kv_type = {s.kind: np.dtype(exact_type(max(spec.at(s.input, i).q_max * spec.at(s.cache, i).q_max
                                                        for i in range(cfg.n_layers)) * (s.n_in(cfg) // cfg.n_heads),
                                                    0, 0, int8=False)).type for s in stages.LAYER if s.cache}
        self.embed = np.asarray(embed, np.int64)
        self.head = head
        self.layer_params = layer_params
        self.reset()

    def reset(self):
        c = self.cfg
        self.units = [DecoderLayerUnit(params, c.max_seq_len, self.ops) for params in self.layer_params]
        shape = (c.n_kv_heads, c.max_seq_len, c.head_dim)
        # kept in the product's exact float type (the cached integers are at most 8 bits)
        self.caches = [{s.name: np.zeros(shape, self.kv_type[s.kind]) for s in stages.LAYER if s.cache}
                       for _ in range(c.n_layers)]

    def _limits(self, name: str) -> int:
        """The largest |q| on the inputs of a static stage (its layer's bits)."""
        return self.spec.of_stage(name).q_max

    def _static(self, name, x):
        if self.stream:
            return ExactProduct(self.model.weight(name), self._limits(name))(x)
        return self.products[name](x)

    def _kv(self, stage, cache, x, n, keys: int):
        """Q·Kᵀ (query spikes against the first `keys` cached keys: (n, heads, keys)) or P·V
        (probability spikes of those keys against their values: (n, heads, head_dim)); the keys
        past the last position in the window add nothing (they are masked, their spikes 0)."""
        c = self.cfg
        nkv, group = c.n_kv_heads, c.n_heads // c.n_kv_heads
        mem = cache[:, :keys]  # (kv heads, keys, hd); head h reads kv head h // group
        spikes = x.reshape(n, nkv, group, -1)[..., :keys] if stage.kind is stages.NodeKind.KV_PV else x.reshape(n, nkv, group, -1)
        spikes = spikes.transpose(1, 0, 2, 3).reshape(nkv, n * group, -1).astype(mem.dtype)
        acc = float_matmul(spikes, mem.transpose(0, 2, 1) if stage.kind is stages.NodeKind.KV_QK else mem)
        return acc.reshape(nkv, n, group, -1).transpose(1, 0, 2, 3).reshape(n, c.n_heads, -1).astype(np.int64)

    def forward(self, tokens, start: int = 0, trace: dict | None = None):
        """Tokens at positions start, start+1, ... Returns (logits (tokens, vocab) FRAC ints,
        spike counts per stage (tokens, n)): each stage's integer input, i.e. how many ternary
        spikes each input axon carries in that stage's window (|q| spikes of sign(q)).

        trace, if given, receives per layer the residual stream after it ("L{i}.resid", FRAC, before
        the hand-off to the next layer carries it)
        and the attention's P·V spike counts with their normalisers ("L{i}.attn": p, top, total).
        """
        c = self.cfg
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        pos = np.arange(start, start + len(tokens))
        if start < 0 or pos[-1] >= c.max_seq_len:
            raise ValueError(f"positions {start}..{pos[-1]} outside the context of {c.max_seq_len} tokens")
        n, nkv, hd = len(tokens), c.n_kv_heads, c.head_dim
        keys = int(pos[-1]) + 1  # the cached positions any token of the window attends to
        spikes = {}
        h = self.embed[tokens]
        program, (first,) = stages.LAYER_INPUT
        for i, unit in enumerate(self.units):
            acts = {first.name: getattr(unit, program)(hand_off(h, unit.p))}
            for stage in stages.LAYER:
                x = spikes[stage.node(i)] = acts[stage.input.name]
                if stage.static:
                    acc = self._static(stage.node(i), x)
                else:
                    cache = self.caches[i][stage.name]
                    cache[:, pos] = np.moveaxis(acts[stage.cache.name].reshape(n, nkv, hd), 0, 1)
                    acc = self._kv(stage, cache, x, n, keys)
                    if trace is not None and stage.kind is stages.NodeKind.KV_PV:
                        trace[f"L{i}.attn"] = (x, unit.p_top, unit.p_total)
                out = unit.run(stage, acc.reshape(n, -1) if stage.kind is stages.NodeKind.KV_PV else acc, pos)
                if stage.kind is stages.NodeKind.KV_QK and keys < c.max_seq_len:  # probabilities of every cached position
                    out = tuple(np.concatenate([o, np.zeros((*o.shape[:-1], c.max_seq_len - keys), o.dtype)], -1) for o in out)
                if stage.produces:
                    acts.update(zip((p.name for p in stage.produces), out))
                else:
                    h = out
            if trace is not None:
                trace[f"L{i}.resid"] = h
        x, ratio = head_in(h, self.head, self.ops)
        spikes[stages.HEAD.name] = x
        return logits_out(self._static(stages.HEAD.name, x), ratio, self.head, self.ops), spikes

    def step(self, token: int, pos: int):
        """One token at position pos: (logits (vocab,), spike counts per stage)."""
        logits, spikes = self.forward([token], pos)
        return logits[0], {k: v[0] for k, v in spikes.items()}

    def generate(self, prompt: list[int], n_new: int, choose=None, eos_id: int | None = None):
        """Continuation: greedy, or choose(logits row, position) -> token (a sampler); stops after
        eos_id. Returns (all tokens, logits per processed token, spikes per token)."""
        self.reset()
        tokens = list(prompt)
        logits, spikes = [], []
        for pos in range(len(prompt) + n_new - 1):
            out, sp = self.step(tokens[pos], pos)
            logits.append(out)
            spikes.append(sp)
            if pos + 1 >= len(tokens):
                tokens.append(int(np.argmax(out)) if choose is None else int(choose(out, pos)))
                if tokens[-1] == eos_id:
                    break
        return tokens, np.stack(logits), spikes

    def spike_events(self, name: str, q, code: str | None = None) -> np.ndarray:
        """Spikes each input of a stage carries in its window, in a code (by default the point's
        reference code, `codes.reference`: ternary |q|, bit planes popcount |q|)."""
        bits = self.spec.of_stage(name).bits
        return codes.CODES[code or codes.reference(bits)].spikes(np.asarray(q), bits)

    def stage_sops(self, spikes: dict, pos, code_of=None) -> dict:
        """Analytic synaptic operations per stage: Σ over spikes of the axon's fan-out (the stage
        table's SOP rule). spikes per stage (..., n) with pos matching the leading axes; code_of:
        stage node -> the code its input travels in (default: each point's reference code)."""
        pos = np.asarray(pos)
        sops = {}
        for name, q in spikes.items():
            n = self.spike_events(name, q, code_of(name) if code_of else None)
            stage = stages.stage_of(name)
            fan = stage.fanout(self.cfg, self.fanout.get(name), pos)
            sops[name] = n @ fan if stage.static else n.reshape(*n.shape[: pos.ndim], -1).sum(-1) * fan
        return sops
