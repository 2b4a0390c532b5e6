"""What spiking costs, measured on held-out text (`sdllm-eval` prints it).

For an SDLLM and the float model it came from, on held-out windows of the stdlib's pydoc topics
(`sdllm.models.source.corpus`): perplexity of the float model, the weight-only quantised model, the
fake-quant forward and the integer reference (what the chip runs); per stage, the cosine
similarity between every float activation and the spike counts that replace it, and per layer
the KL divergence of the attention distributions; firing rates, the spike-count histogram, SOPs
per token; the cost of each spike code (`sdllm.codes`); the ablation of γ-SQP's parts
with the round-to-nearest ANN baseline; the cost of each integer-only nonlinearity against its
float version.
"""

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sdllm import codes, stages
from sdllm.formats.model import ModelFile, QuantSpec
from sdllm.models.conversion.calibration import record_activations
from sdllm.models.conversion.convert import convert
from sdllm.models.conversion.fakequant import FakeQuantSDLLM
from sdllm.models.conversion.rotation import prepare_as
from sdllm.models.evaluation.float_ops import NONLINEARITIES, float_reference
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.integer.likelihood import nll
from sdllm.models.integer.reference import IntegerSDLLM
from sdllm.models.integer.units import causal
from sdllm.models.source.corpus import docstring_windows, held_out_windows, text_windows


def _progress(items, desc: str, progress: bool):
    return tqdm(items, desc=desc, disable=None if progress else True, leave=False)


@torch.no_grad()
def torch_perplexity(forward, rows: np.ndarray) -> float:
    total = 0.0
    for row in torch.from_numpy(rows):
        logits = forward(row[None, :-1])[0].double()
        total += F.cross_entropy(logits, row[1:], reduction="sum").item()
    return math.exp(total / (rows.shape[0] * (rows.shape[1] - 1)))


def _cosine_rows(a, b):
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), 0.0)


def _kl(p, q):
    """KL(p || q) over the last axis, 0·log 0 = 0."""
    ratio = np.where(p > 0, p / np.where(q > 0, q, 1), 1.0)
    return np.where(p > 0, p * np.log(ratio), 0.0).sum(-1)


class Tally:
    """Sums over held-out tokens: NLL, spikes, SOPs per code, the spike-count histogram and
    the float-vs-spike fidelity figures."""

    def __init__(self, windows: dict):
        self.windows = windows  # stage -> timesteps of its input's train
        self.tokens = 0
        self.nll = 0.0
        self.spikes, self.sops, self.histogram, self.neurons = {}, {}, {}, {}
        self.code_spikes, self.code_sops = {}, {}
        self.cos, self.attn_kl, self.logit_kl = {}, {}, 0.0

    @staticmethod
    def add(d, key, value):
        d[key] = d.get(key, 0) + value

    def add_code(self, code: str, stage: str, spikes: int, sops: int) -> None:
        self.add(self.code_spikes.setdefault(code, {}), stage, spikes)
        self.add(self.code_sops.setdefault(code, {}), stage, sops)

    def as_dict(self) -> dict:
        n = self.tokens
        firing = {stage: self.spikes[stage] / (self.neurons[stage] * self.windows[stage]) for stage in self.spikes}
        return {
            "tokens": n,
            "integer": math.exp(self.nll / n),
            "spikes_per_token": sum(self.spikes.values()) / n,
            "sops_per_token": sum(self.sops.values()) / n,
            "sops_per_stage": {k: v / n for k, v in self.sops.items()},
            "firing": firing,
            "windows": self.windows,
            "histogram": self.histogram,
            "codes": {c: {"spikes_per_token": sum(self.code_spikes[c].values()) / n,
                          "sops_per_token": sum(self.code_sops[c].values()) / n,
                          "sops_per_stage": {k: v / n for k, v in self.code_sops[c].items()}} for c in self.code_spikes},
            "cosine": {k: v / n for k, v in self.cos.items()},
            "attention_kl": {k: v / n for k, v in self.attn_kl.items()},
            "logits_kl": self.logit_kl / n if self.cos else None,
        }


def _fanouts(ref, name, pos):
    """Per-axon fan-out of each input of a stage (the stage table's SOP rule), (tokens, n)."""
    stage = stages.stage_of(name)
    fan = stage.fanout(ref.cfg, ref.fanout.get(name), pos)
    n = stage.n_in(ref.cfg)
    return np.broadcast_to(fan, (len(pos), n)) if stage.static else np.broadcast_to(np.asarray(fan).reshape(-1, 1), (len(pos), n))


def integer_scores(model: ModelFile, rows: np.ndarray, prepared=None, float_ops=(), progress: bool = True) -> dict:
    """Teacher-forced integer reference on each window: perplexity, spikes, SOPs (per spike code),
    the histogram, and — given the prepared float model — cosine and KL against it."""
    ref = float_reference(model, float_ops) if float_ops else IntegerSDLLM(model)
    spec = ref.spec
    t = Tally({name: codes.steps(codes.reference(b), b) for name in stage_names(ref.cfg)
               for b in [spec.of_stage(name).bits]})
    for row in _progress(rows, "integer reference", progress):
        ref.reset()
        trace = {}
        logits, spikes = ref.forward(row[:-1], 0, trace)
        pos = np.arange(len(row) - 1)
        t.tokens += len(pos)
        t.nll += float(nll(logits, row[1:]).sum())
        mask = causal(ref.cfg.max_seq_len, pos)
        for stage, q in spikes.items():
            a = np.abs(q)
            point = stages.stage_of(stage).input
            at = spec.of_stage(stage)
            live = np.broadcast_to(mask, a.shape) if not point.signed else np.ones(a.shape, bool)
            t.add(t.histogram, stage, np.bincount(a[live], minlength=at.q_max + 1))
            t.add(t.spikes, stage, int(ref.spike_events(stage, q).sum()))
            t.add(t.neurons, stage, int(live.sum()))
            fan = _fanouts(ref, stage, pos)
            flat = q.reshape(len(pos), -1)
            for name, code in codes.CODES.items():
                # unsigned values (the probabilities) have no offset to pay: the unsigned code is the plain count
                n = np.abs(flat) if not point.signed and name == "unsigned" else code.spikes(flat, at.bits)
                t.add_code(name, stage, int(n.sum()), int((n * fan).sum()))
        for stage, s in ref.stage_sops(spikes, pos).items():
            t.add(t.sops, stage, int(s.sum()))
        if prepared is not None:
            _fidelity(t, prepared, row, spikes, trace, logits)
    return t.as_dict()


def stage_names(cfg) -> list:
    """Every stage node of a model, in forward order."""
    return [s.node(i) for i in range(cfg.n_layers) for s in stages.LAYER] + [stages.HEAD.name]


@torch.no_grad()
def _fidelity(t: Tally, prepared, row, spikes, trace, logits):
    acts = record_activations(prepared, torch.from_numpy(row[None, :-1]), points=tuple(s.input.name for s in stages.STAGES.values()))
    float_logits = prepared(torch.from_numpy(row[None, :-1]))[0].double()
    n = len(row) - 1
    for name, q in spikes.items():
        layer = name.split(".")[0] if "." in name else None
        stage = stages.stage_of(name)
        x = acts[stage.input.tap(None if layer is None else int(layer[1:]))].double().numpy()
        q = q[:, :, :n] if stage.kind is stages.NodeKind.KV_PV else q.reshape(x.shape)
        t.add(t.cos, name, float(_cosine_rows(x, q).reshape(n, -1).mean(-1).sum()))
    for key, (p, _, _) in ((k, v) for k, v in trace.items() if k.endswith(".attn")):
        layer = key.split(".")[0]
        p_float = acts[f"{layer}.{stages.PROBS.name}"].double().numpy()  # (tokens, heads, tokens)
        p_int = p[:, :, :n].astype(np.float64)
        p_int = p_int / np.maximum(p_int.sum(-1, keepdims=True), 1)
        t.add(t.attn_kl, layer, float(_kl(p_int, p_float).mean(-1).sum()))
    lp_float = F.log_softmax(float_logits, -1).numpy()
    lp_int = F.log_softmax(torch.from_numpy(logits / (1 << fx.FRAC)), -1).numpy()
    t.logit_kl += float((np.exp(lp_float) * (lp_float - lp_int)).sum())


IN_DOMAIN = "in-domain (held-out pydoc topics)"
OUT_OF_DOMAIN = "out-of-domain (stdlib docstrings)"
YOUR_TEXT = "your text"


def evaluation_windows(model: ModelFile, n_windows: int) -> np.ndarray:
    return held_out_windows(model.tokenizer, model.config.max_seq_len, n_windows)


def domains(model: ModelFile, n_windows: int, text_paths=()) -> dict:
    """name -> windows: the held-out pydoc text (in-domain), the stdlib's docstrings (out of
    domain: text of another kind calibration never sees) and, if given, the user's own text."""
    seq = model.config.max_seq_len
    out = {IN_DOMAIN: evaluation_windows(model, n_windows), OUT_OF_DOMAIN: docstring_windows(model.tokenizer, seq, n_windows)}
    if text_paths:
        out[YOUR_TEXT] = text_windows(model.tokenizer, text_paths, seq, n_windows)
    return out


def perplexities(model: ModelFile, float_model, rows: np.ndarray, progress: bool = True) -> dict:
    """Float, weight-only, fake-quant and integer-reference perplexity (and SOPs) on `rows`."""
    return evaluate(model, float_model, rows=rows, progress=progress, fidelity=False)


def evaluate(model: ModelFile, float_model, n_windows: int = 8, progress: bool = True, rows=None, fidelity: bool = True) -> dict:
    """Perplexities (float, weight-only, fake-quant, integer), spikes, SOPs, fidelity and the
    spike-count histogram on the same windows (`rows`, by default the in-domain held-out ones)."""
    rows = evaluation_windows(model, n_windows) if rows is None else rows
    out = {}
    prepared = None
    if float_model is not None:
        spec = model.quant
        prepared = prepare_as(float_model.eval(), spec, model.rotation, model.balance)
        out["float"] = torch_perplexity(float_model.eval(), rows)
        out["weight_only"] = torch_perplexity(FakeQuantSDLLM(float_model, model, quantize_activations=False), rows)
        out["fake_quant"] = torch_perplexity(FakeQuantSDLLM(float_model, model), rows)
    out.update(integer_scores(model, rows, prepared if fidelity else None, progress=progress))
    return out


def ablation_specs(spec: QuantSpec) -> list:
    """(label, spec, what is measured, code of the linear layers' inputs or None for the spec's own)
    rows: each part of γ-SQP taken away, one at a time."""
    rows = [
        ("no rotation", dataclasses.replace(spec, rotate=False, wide_channels=0), "integer", None),
    ]
    if spec.wide_channels:  # the group lives in the learned rotation: the rows without one drop it too
        rows.append(("no wide channel group", dataclasses.replace(spec, wide_channels=0), "integer", None))
    if spec.rotate and spec.rotation == "learned":
        rows.append(("random Hadamard rotations (not learned)", dataclasses.replace(spec, rotation="hadamard", wide_channels=0),
                     "integer", None))
    if spec.rotate and spec.head_rotation:
        rows.append(("no per-head value rotation (residual and online Hadamards only)",
                     dataclasses.replace(spec, head_rotation=False), "integer", None))
    if spec.balance:
        rows.append(("no channel balancing (down_proj and o_proj inputs)", dataclasses.replace(spec, balance=0.0),
                     "integer", None))
    rows += [
        ("γ = 1 (max scaling)", dataclasses.replace(spec, calibrate_gamma=False), "integer", None),
        ("RTN weights (no GPTQ)", dataclasses.replace(spec, gptq=False), "integer", None),
    ]
    if spec.attn_bits != spec.act_bits:
        rows.append((f"queries and probabilities at {spec.act_bits} bits (attn bits = act bits)",
                     dataclasses.replace(spec, attn_bits=spec.act_bits), "integer", None))
    window = codes.steps(codes.reference(spec.act_bits), spec.act_bits)
    if spec.act_bits > 2 and codes.reference(spec.act_bits) == "ternary":
        rows.append((f"unsigned count code within T = {window} ({spec.act_bits - 1}-bit values)",
                     dataclasses.replace(spec, act_bits=spec.act_bits - 1), "integer", "unsigned"))
    rows.append(("no dead zone (θ = 0)", dataclasses.replace(spec, theta=0, thetas=()), "integer", None)
                if spec.theta or spec.thetas else ("dead zone θ = 1", dataclasses.replace(spec, theta=1), "integer", None))
    ann = dataclasses.replace(spec, rotate=False, gptq=False, calibrate_gamma=False, theta=0, thetas=(), wide_channels=0)
    rows.append((f"{spec.describe()} round-to-nearest ANN (no rotation, max scaling)", ann, "fake_quant", None))
    return rows


def linear_inputs(name: str) -> bool:
    """The stage consumes a linear layer's input (the points `act_bits` sets)."""
    return stages.stage_of(name).input.bits == "act_bits"


def ablation(model: ModelFile, float_model, rows: np.ndarray, calib, progress: bool = True, converter=None) -> list:
    """[(label, T, perplexity, SOPs per token or None)] for the ablation rows, on `rows`; T and
    SOPs are those of the row's codes (the linear layers' inputs in the row's code if it names one).
    A row that keeps a learned rotation keeps the model's own (as far as it uses it), so that it
    differs from the model in its one part. converter(spec, rotation) -> ModelFile replaces
    converting `float_model` on `calib` (e.g. a cache)."""
    out = []
    for label, variant, measure, code in _progress(ablation_specs(model.quant), "ablation", progress):
        if any(variant.at(p, None).theta >= variant.at(p, None).step_max for p in stages.POINTS.values() if p.spiked):
            continue
        rotation = model.rotation if variant.rotate and variant.rotation == "learned" else None
        vmodel = (converter(variant, rotation) if converter
                  else convert(float_model, variant, calib, model.tokenizer, rotation=rotation))
        if measure == "fake_quant":
            out.append((label, None, torch_perplexity(FakeQuantSDLLM(float_model, vmodel), rows), None))
            continue
        r = integer_scores(vmodel, rows, progress=progress)
        if code is None:
            bits = variant.at(stages.ATTN_IN, None).bits
            steps, sops = codes.steps(codes.reference(bits), bits), r["sops_per_token"]
        else:
            steps = codes.CODES[code].timesteps(variant.at(stages.ATTN_IN, None).bits)
            sops = sum(v if not linear_inputs(k) else r["codes"][code]["sops_per_stage"][k] for k, v in r["sops_per_stage"].items())
        out.append((label, steps, r["integer"], sops))
    return out


def nonlinearity_costs(model: ModelFile, rows: np.ndarray, progress: bool = True) -> dict:
    """Integer-reference perplexity with each integer-only nonlinearity replaced by its float version."""
    out = {}
    for names in [(n,) for n in NONLINEARITIES] + [NONLINEARITIES]:
        out["+".join(names)] = integer_scores(model, rows, float_ops=names, progress=progress)["integer"]
    return out


