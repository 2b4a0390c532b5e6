"""model.pt: the SDLLM as conversion writes it and the compiler reads it — defined, written and
read (with validation) here and nowhere else.

On disk a plain dict of tensors and primitive values (`torch.save`, read back with
`torch.load(weights_only=True)` only, so a model.pt can never run code):

    format "sdllm", format_version 3 (1 is still read: one activation width, ternary trains; 2: no
                  per-layer tables)
    config        LlamaConfig fields (the model's shape)
    quant         QuantSpec fields: bits per group of quantisation points, per-point and per-layer
                  overrides (spike points by tap 'L3.down', weights by static stage node 'L3.o'), dead
                  zones, conversion options, `wide_channels` where the residual's readers carry a
                  high-precision channel group (absent: none) (how the integers travel
                  as spikes is the compiler's choice: older files' `code` is read and ignored)
    tokenizer     a tokenizer spec (`sdllm.tokenizer`)
    embed_fx      (vocab, dim) integers: the embedding, FRAC fixed point (the host's table)
    rope_cos_fx, rope_sin_fx   (max_seq_len, head_dim/2): RoPE tables, TRIG_FRAC
    eps_fx        RMSNorm's ε, 2·FRAC fixed point
    layers        one dict per layer: '{stage}.weight' int8 (n_out, n_in) and '{stage}.scale_fx'
                  (n_out,) per static stage, '{entry stage}.bias_fx' (its n_out,), 'v_range_fx'
                  (kv heads, head_dim), 'gamma' {point: γ} for the γ-calibrated points
    head          'weight', 'scale_fx', 'gamma' of the LM head
    rotation      (optional, a learned rotation) {'residual': (dim, dim) float64 R1, and with the
                  head rotation 'heads': (layers, head_dim, head_dim) float64 R2}: what the float
                  model is prepared with in place of the seeded Hadamards (evaluation needs it)
    balance       (optional, channel balancing) {'down': (layers, ffn_dim), 'values': (layers,
                  kv heads · head_dim)} float64 channel scales folded into up/down and v/o
                  (`sdllm.models.conversion.balance`): present exactly when quant.balance > 0
    synthetic     (optional) {'seed': s}: no weight matrices; each static stage's is drawn on
                  demand from a generator seeded by (s, the stage's index in forward order)
    budget        (optional, a budgeted conversion: `sdllm.models.conversion.budget`) what the search
                  found: the budget, its objective and target, the float, predicted and measured
                  calibration perplexity ratios, the energy per token against the uniform default's, and
                  the fit to the target's cores (`fit`, `cores_needed`, `cores_available`; older files: none)
    calibration   (optional) what γ, GPTQ, the rotation and the balancing were calibrated on, in one
                  line: the default mixture's name and kinds, or the user's files
                  (`sdllm.models.source.corpus.calibration_name`)

In memory a `ModelFile`: the same contents, typed, weights and scales keyed by node name
('L3.o', 'head') and γ by point ('L3.q', 'head').
"""

import io
import pickle
import re
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from sdllm import arguments, codes, stages
from sdllm.errors import SdllmError
from sdllm.formats import files
from sdllm.formats.fields import Doc, FormatError
from sdllm.outputs import write_file
from sdllm.resources import require_memory

FORMAT = "sdllm"
FORMAT_VERSION = 3
READS = (1, 2, 3)  # 1: one activation width, ternary everywhere (read as such); 2: no per-layer tables
ROTATIONS = ("hadamard", "learned")
BALANCE_LIMIT = 1024.0  # a channel scale lies within 1/BALANCE_LIMIT..BALANCE_LIMIT

# Sane upper bounds on a model's shape: far above any LLaMA-family model we target, far below what
# would exhaust a machine before anything is checked (a KV cache of max_seq_len positions is allocated).
LIMITS = {"vocab_size": 1 << 20, "dim": 1 << 16, "n_layers": 1 << 10, "n_heads": 1 << 10, "n_kv_heads": 1 << 10,
          "ffn_dim": 1 << 18, "max_seq_len": 1 << 15}
BIT_RANGE = (2, 8)
WIDE_BITS = 8  # a wide channel group's bits (`QuantSpec.wide_channels`): the widest Loihi 2 synapses read
SEED_RANGE = (0, (1 << 32) - 1)  # of a conversion's random rotation
ROTATION_STEPS_MAX = 1 << 20
RESID_SQUARES_BITS = 60  # a residual's squares summed over its channels stay below 2**60 (the integer RMS's range)
FIXED_LIMIT = 1 << 40  # |stored fixed-point values|: keeps every intermediate of the integer programs below 2**62
# what a budgeted conversion records (`sdllm.models.conversion.budget`): field -> (type, lo, hi)
BUDGET_FIELDS = {"budget": (float, 1.0, 1e3), "objective": (str, None, None), "target": (str, None, None),
                 "float_ppl": (float, 0.0, 1e12), "predicted_ratio": (float, 0.0, 1e12), "measured_ratio": (float, 0.0, 1e12),
                 "default_ratio": (float, 0.0, 1e12), "energy": (float, 0.0, 1e18), "default_energy": (float, 0.0, 1e18),
                 "windows": (int, 1, 1 << 20), "candidates": (int, 0, 1 << 20), "checks": (int, 0, 1 << 10),
                 "fit": (str, None, None), "cores_needed": (int, 0, 1 << 40), "cores_available": (int, 0, 1 << 40)}
# the fit to the target's cores (`sdllm.models.conversion.target_fit`): none without a target, and in files written before it
BUDGET_DEFAULTS = {"fit": "none", "cores_needed": 0, "cores_available": 0}
CALIBRATION_CHARS = 1000  # the calibration text's one-line description, at most


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a LLaMA-family decoder (and of the SDLLM converted from it)."""

    vocab_size: int = 256
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 256
    max_seq_len: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    attn_bias: bool = False  # q/k/v projection biases (Qwen2)
    down_hadamard: int = 0  # block size of the online Hadamard before down_proj (0: none)
    qk_hadamard: bool = False  # online Hadamard on each head's query and key after RoPE

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def resid_bits(self) -> int:
        """Signed bits of the residual stream (FRAC fixed point) as one layer hands it to the next:
        the widest whose squares over `dim` channels sum below 2**RESID_SQUARES_BITS, so no
        integer RMS can overflow. The hand-off saturates there (`sdllm.models.integer.units.hand_off`):
        26 bits for dim 576 (±8,192 in float), 25 for dim 4,096."""
        return (RESID_SQUARES_BITS - (self.dim - 1).bit_length()) // 2 + 1

    @property
    def resid_max(self) -> int:
        """Largest |value| (FRAC) the residual's hand-off carries."""
        return qmax(self.resid_bits)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Precision:
    """How one quantisation point of one layer carries its integers (`QuantSpec.at`).

    Without a wide group, q = clip(round(x·Q/m), ±Q) with Q = q_max and m the γ order statistic
    of |x| over the row. With one, the first `wide` channels (the residual rotation's
    highest-variance directions) are clipped at ±q_max and the others at ±step_max, with the
    same step m/step_max and m taken over the others only: the weights, the scales and the
    partial sums are those of the step_bits-bit point; only the group's codes are longer."""

    bits: int  # its widest integers' range [-Q, Q], Q = 2**(bits-1) - 1: the code's width
    theta: int = 0  # dead zone: |q| <= theta sends nothing
    wide: int = 0  # leading channels carried at `bits`, the rest at `step_bits`
    step_bits: int = 0  # with a wide group: the rest's bits, whose Q sets the step

    @property
    def q_max(self) -> int:
        return qmax(self.bits)

    @property
    def step_max(self) -> int:
        """The Q of the per-token step m/Q (and the clip of every channel outside a wide group)."""
        return qmax(self.step_bits) if self.wide else self.q_max


@dataclass(frozen=True)
class QuantSpec:
    """Bits and dead zones of an SDLLM's quantisation points (`sdllm.stages.POINTS`), per point and
    per layer, and how it was converted. Checks itself where it is made: a field of the wrong type
    or out of range is one `SdllmError` line naming it (as the commands' flag), whoever builds it.
    `at(point, layer)` is the one way to ask what a layer's point carries (`of_stage(node)` for a
    stage's input); `weights_at(stage, layer)` a static stage's weight bits."""

    weight_bits: int = 4
    act_bits: int = 4  # the inputs of every linear layer: q/k/v, o, gate/up, down, the LM head
    attn_bits: int = 8  # queries and attention probabilities: the spike inputs of Q·Kᵀ and P·V
    kv_bits: int = 8  # keys and values, written into the KV stages' synapses
    theta: int = 0  # dead zone of every spike point: |q| <= theta sends nothing
    point_bits: tuple = ()  # ((point, bits), ...): per-point bits overriding the above (mixed precision)
    thetas: tuple = ()  # ((point, θ), ...): per-point dead zones overriding theta (calibrated clipping)
    rotate: bool = True  # rotation of the residual stream + online Hadamards
    head_rotation: bool = True  # with rotate: a randomised Hadamard on every head's values, fused into v/o
    gptq: bool = True  # GPTQ weights (else round-to-nearest with max scaling)
    calibrate_gamma: bool = True  # γ per quantisation point calibrated (else γ = 1: max scaling)
    seed: int = 0  # of the random rotation
    rotation: str = "learned"  # the residual and value rotations: learned from the seeded randomised Hadamards, or those
    rotation_steps: int = 100  # Cayley SGD steps of a learned rotation (`sdllm.models.conversion.learned_rotation`)
    clip_budget: float = 0.0  # dead zones calibrated within this relative perplexity increase (0: none)
    balance: float = 0.5  # α of the channel balancing of down_proj's and o_proj's inputs (`sdllm.models.conversion.balance`; 0: none)
    layer_bits: tuple = ()  # ((tap, bits), ...): one layer's spike point ('L3.down'; the head's 'head'), overriding point_bits
    layer_weight_bits: tuple = ()  # ((node, bits), ...): one static stage's weights ('L3.o', 'head')
    wide_channels: int = 0  # the residual rotation's leading channels carried at WIDE_BITS by its readers (0: none)

    def __post_init__(self):
        lo, hi = BIT_RANGE
        for name in ("weight_bits", "act_bits", "attn_bits", "kv_bits"):
            arguments.integer(_flag(name), getattr(self, name), lo, hi, f"must be within {lo}..{hi}")
        arguments.number("--clip-budget", self.clip_budget, 0, 10, "must be within 0..10 (a fraction of perplexity)")
        arguments.number("--balance", self.balance, 0, 1, "must be within 0..1 (an exponent)")
        arguments.text("--rotation", self.rotation, ROTATIONS)
        arguments.integer("--rotation-steps", self.rotation_steps, 1, ROTATION_STEPS_MAX, f"must be within 1..{ROTATION_STEPS_MAX}")
        arguments.integer("--seed", self.seed, *SEED_RANGE)
        arguments.integer("--wide-channels", self.wide_channels, 0, LIMITS["dim"], f"must be within 0..{LIMITS['dim']}")
        if self.wide_channels and not (self.rotate and self.rotation == "learned"):
            raise SdllmError(f"--wide-channels: needs the learned rotation (--rotation learned), got "
                             f"{self.rotation if self.rotate else 'no rotation'}")
        arguments.integer("--theta", self.theta)  # its range depends on each point's bits: below
        for name in ("rotate", "head_rotation", "gptq", "calibrate_gamma"):
            arguments.boolean(name, getattr(self, name))
        for field_name, flag, known, names, (v_lo, v_hi) in _tables():
            pairs = getattr(self, field_name)
            if not isinstance(pairs, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
                arguments.fail(field_name, f"a tuple of ({'point name' if field_name in ('point_bits', 'thetas') else 'name'}, integer) pairs", pairs)
            for name, value in pairs:
                if not isinstance(name, str) or not known(name):
                    arguments.fail(f"{flag} name", f"one of {', '.join(names)}", name)
                arguments.integer(f"{flag} {name}", value, v_lo, v_hi, f"must be within {v_lo}..{v_hi}" if v_hi else None)
            if len({name for name, _ in pairs}) != len(pairs):
                arguments.fail(field_name, "each name once", pairs)
        for point, layer in self._taps():
            at = self.at(point, layer)
            if point.spiked and not 0 <= at.theta < at.step_max:
                raise SdllmError(f"--theta: must be within 0..{at.step_max - 1} for the {at.bits}-bit point "
                                 f"{point.tap(layer)}, got {at.theta}")

    def _taps(self):
        """(point, layer) of every point as the spec sets it: each point's own default (layer None),
        and every layer the per-layer table names."""
        yield from ((p, None) for p in stages.POINTS.values())
        yield from sorted((t for t in map(stages.parse_tap, dict(self.layer_bits)) if t[1] is not None),
                          key=lambda t: (t[1], t[0].name))

    def at(self, point: stages.Point, layer: int | None) -> Precision:
        """What `point` of `layer` carries (layer None: every layer the per-layer table does not name,
        and the head's own point)."""
        bits = dict(self.layer_bits).get(point.tap(layer), dict(self.point_bits).get(point.name, getattr(self, point.bits)))
        theta = dict(self.thetas).get(point.name, self.theta) if point.spiked else 0
        if self.wide_channels and point in stages.RESIDUAL_READERS and bits < WIDE_BITS:
            return Precision(WIDE_BITS, theta, self.wide_channels, bits)
        return Precision(bits, theta)

    def of_stage(self, node: str) -> Precision:
        """`at` for the input of a stage node ('L3.o', 'L3.qk', 'head')."""
        return self.at(stages.stage_of(node).input, stages.layer_of(node))

    def weights_at(self, stage: stages.Stage, layer: int | None) -> int:
        """Bits of a static stage's weights in `layer` (None: the LM head)."""
        return dict(self.layer_weight_bits).get(stage.node(layer), self.weight_bits)

    def widest_weights(self) -> int:
        """Bits of the widest weights of any static stage."""
        return max([self.weight_bits] + [b for _, b in self.layer_weight_bits])

    def widest_values(self) -> int:
        """Bits of the widest integer any point of any layer carries."""
        return max(self.at(p, layer).bits for p, layer in self._taps())

    def per_layer(self) -> bool:
        return bool(self.layer_bits or self.layer_weight_bits)

    def check_model(self, cfg: "LlamaConfig") -> None:
        """The per-layer tables name layers the model has; a wide group leaves channels at the step's bits."""
        n_layers = cfg.n_layers
        if self.wide_channels >= cfg.dim:
            raise SdllmError(f"--wide-channels: must be below the model's dim {cfg.dim}, got {self.wide_channels}")
        for field_name in ("layer_bits", "layer_weight_bits"):
            for name, _ in getattr(self, field_name):
                layer = stages.layer_of(name)
                if layer is not None and layer >= n_layers:
                    raise SdllmError(f"{field_name} {name}: layer {layer} beyond the model's {n_layers} layers "
                                     f"(0..{n_layers - 1})")

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("point_bits", "thetas", "layer_bits", "layer_weight_bits"):
            d[key] = dict(getattr(self, key))
        if not self.wide_channels:  # files without a group read as before
            del d["wide_channels"]
        return d

    def precision(self) -> str:
        """Bits of every spike point, grouped (e.g. '... head 4-bit; q, p 8-bit'), and what the
        per-layer tables change."""
        groups = {}
        for p in stages.POINTS.values():
            if p.spiked:
                at = self.at(p, None)
                what = f"{at.step_bits}-bit with {at.wide} channels {at.bits}-bit" if at.wide else f"{at.bits}-bit"
                groups.setdefault(what, []).append(p.name)
        out = "; ".join(f"{', '.join(names)} {what}" for what, names in groups.items())
        if self.per_layer():
            parts = [f"{', '.join(sorted((n for n, v in self.layer_bits if v == b), key=_by_layer))} {b}-bit"
                     for b in sorted({v for _, v in self.layer_bits})]
            parts += [f"weights of {', '.join(sorted((n for n, v in self.layer_weight_bits if v == b), key=_by_layer))} {b}-bit"
                      for b in sorted({v for _, v in self.layer_weight_bits})]
            out += "; per layer: " + "; ".join(parts)
        return out

    def describe(self) -> str:
        """W4A4 P8 KV8 (and any per-point bits, the number of per-layer choices), as the figures name a setting."""
        extra = "".join(f" {p}{b}" for p, b in self.point_bits)
        if self.layer_bits:
            extra += f" +{len(self.layer_bits)}A"
        if self.layer_weight_bits:
            extra += f" +{len(self.layer_weight_bits)}W"
        if self.wide_channels:
            extra += f" wide{self.wide_channels}"
        return f"W{self.weight_bits}A{self.act_bits} P{self.attn_bits} KV{self.kv_bits}{extra}"


def _by_layer(name: str):
    layer = stages.layer_of(name)
    return (1 << 30 if layer is None else layer, name)


def _spike_tap(name) -> bool:
    t = stages.parse_tap(name) if isinstance(name, str) else None
    return t is not None and t[0].spiked


def _tables():
    """The QuantSpec's name -> integer tables: (field, flag, which names, their forms, (lo, hi) of values)."""
    lo, hi = BIT_RANGE
    spiked = tuple(p.name for p in stages.LAYER_POINTS if p.spiked)
    return (("point_bits", "--point-bits", lambda n: n in stages.POINTS, tuple(stages.POINTS), (lo, hi)),
            ("thetas", "thetas", lambda n: n in stages.POINTS, tuple(stages.POINTS), (0, None)),
            ("layer_bits", "layer_bits", _spike_tap, (f"L{{layer}}.{{{'|'.join(spiked)}}}", stages.HEAD_IN.name), (lo, hi)),
            ("layer_weight_bits", "layer_weight_bits", lambda n: isinstance(n, str) and stages.parse_node(n) is not None,
             ("L{layer}.{" + "|".join(s.name for s in stages.LAYER_STATIC) + "}", stages.HEAD.name), (lo, hi)))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def qmax(bits: int) -> int:
    """Largest magnitude of a symmetric signed integer of `bits` bits: 2**(bits-1) - 1."""
    return codes.qmax(bits)


def read_config(d: Doc) -> LlamaConfig:
    ints = {k: d.int(k, 1, hi) for k, hi in LIMITS.items()}
    cfg = LlamaConfig(**ints, rope_theta=d.float("rope_theta", 0.0, 1e12, lo_open=True),
                      norm_eps=d.float("norm_eps", 0.0, 1.0), tie_embeddings=d.bool("tie_embeddings"),
                      attn_bias=d.bool("attn_bias"), down_hadamard=d.int("down_hadamard", 0, LIMITS["ffn_dim"]),
                      qk_hadamard=d.bool("qk_hadamard"))
    if cfg.dim % cfg.n_heads:
        d.fail("dim", f"a multiple of n_heads {cfg.n_heads}", cfg.dim)
    if cfg.n_heads % cfg.n_kv_heads:
        d.fail("n_heads", f"a multiple of n_kv_heads {cfg.n_kv_heads}", cfg.n_heads)
    if cfg.head_dim % 2:
        d.fail("dim", "an even head_dim (dim / n_heads) for RoPE's halves", f"head_dim {cfg.head_dim}")
    b = cfg.down_hadamard
    if b and (b & (b - 1) or cfg.ffn_dim % b):
        d.fail("down_hadamard", f"0 or a power of two dividing ffn_dim {cfg.ffn_dim}", b)
    if cfg.qk_hadamard and cfg.head_dim & (cfg.head_dim - 1):
        d.fail("qk_hadamard", "false unless head_dim is a power of two", f"true with head_dim {cfg.head_dim}")
    return cfg


def read_quant(d: Doc, version: int = FORMAT_VERSION) -> QuantSpec:
    lo, hi = BIT_RANGE
    bits = lambda key: d.int(key, lo, hi)  # noqa: E731
    flags = dict(rotate=d.bool("rotate"), gptq=d.bool("gptq"), calibrate_gamma=d.bool("calibrate_gamma"),
                 seed=d.int("seed", *SEED_RANGE),
                 head_rotation=d.bool("head_rotation") if d.has("head_rotation") else False)  # older files had none
    if version == 1:  # one activation width and the paper's ternary trains everywhere
        act = bits("act_bits")
        spec = dict(weight_bits=bits("weight_bits"), act_bits=act, attn_bits=act, kv_bits=bits("kv_bits"),
                    rotation="hadamard", balance=0.0, theta=d.int("theta", 0, qmax(hi)), **flags)
    else:
        tables = {field_name: (known, (v_lo, qmax(hi) if field_name == "thetas" else v_hi))
                  for field_name, _, known, _, (v_lo, v_hi) in _tables()}
        per_point = {}
        for key, (known, (v_lo, v_hi)) in tables.items():
            if version < 3 and key.startswith("layer_"):
                continue  # version 2: no per-layer tables
            sub = d.doc(key)
            for name in sub.value:
                if not known(name):
                    sub.fail(name, "a quantisation point, per-layer tap or static stage name", "an unknown name")
            per_point[key] = tuple(sorted((name, sub.int(name, v_lo, v_hi)) for name in sub.value))
        spec = dict(weight_bits=bits("weight_bits"), act_bits=bits("act_bits"), attn_bits=bits("attn_bits"),
                    kv_bits=bits("kv_bits"), theta=d.int("theta", 0, qmax(hi)),
                    rotation=d.str("rotation", ROTATIONS) if d.has("rotation") else "hadamard",  # older files: Hadamards
                    rotation_steps=d.int("rotation_steps", 1, ROTATION_STEPS_MAX) if d.has("rotation_steps") else QuantSpec.rotation_steps,
                    clip_budget=d.float("clip_budget", 0.0, 10.0) if d.has("clip_budget") else 0.0,
                    balance=d.float("balance", 0.0, 1.0) if d.has("balance") else 0.0,  # older files had none
                    wide_channels=d.int("wide_channels", 0, LIMITS["dim"]) if d.has("wide_channels") else 0,
                    **per_point, **flags)
    try:  # every check a QuantSpec makes of itself (a dead zone within each point's bits)
        return QuantSpec(**spec)
    except SdllmError as e:
        raise SdllmError(f"{d.where}: {d.path}: {e}") from None


def read_tokenizer(d: Doc) -> dict:
    from sdllm.tokenizer import TYPES

    kind = d.str("type", TYPES)
    spec = {"type": kind}
    if kind == "hf-tokenizers":
        spec["json"] = d.str("json", max_length=1 << 28)
        for key in ("bos_id", "eos_id"):
            if d.has(key):
                spec[key] = d.int(key, 0, (1 << 31) - 1)
        if d.has("chat_template"):
            spec["chat_template"] = d.str("chat_template", max_length=1 << 20)
    return spec


@dataclass
class ModelFile:
    config: LlamaConfig
    quant: QuantSpec
    tokenizer: dict
    embed_fx: np.ndarray  # (vocab, dim)
    rope_cos_fx: np.ndarray  # (max_seq_len, head_dim / 2)
    rope_sin_fx: np.ndarray
    eps_fx: int
    scales_fx: dict  # node -> (n_out,) per-output-channel weight scales, SCALE_FRAC
    gamma: dict  # 'L{i}.{point}' or 'head' -> γ
    bias_fx: list  # per layer: (entry stage's n_out,) added after it, FRAC
    v_range_fx: list  # per layer: (kv heads, head_dim) static range of the cached values, FRAC
    weights: dict = field(default_factory=dict)  # node -> (n_out, n_in) int8; empty for a synthetic model
    synthetic_seed: int | None = None
    rotation: dict | None = None  # a learned rotation: 'residual' (dim, dim), 'heads' (layers, hd, hd), float64
    balance: dict | None = None  # channel scales: 'down' (layers, ffn_dim), 'values' (layers, kv heads · hd), float64
    budget: dict | None = None  # a budgeted conversion's record (BUDGET_FIELDS)
    calibration: str | None = None  # what it was calibrated on, one line (CALIBRATION_CHARS at most)

    def __post_init__(self):
        self.quant.check_model(self.config)

    def weight(self, node: str) -> np.ndarray:
        """A static stage's integer weights (n_out, n_in), int8: stored, or drawn for a synthetic model."""
        if self.synthetic_seed is None:
            return np.asarray(self.weights[node])
        shapes = stages.static_shapes(self.config)
        q = qmax(self.quant.weights_at(stages.stage_of(node), stages.layer_of(node)))
        rng = np.random.default_rng([self.synthetic_seed, list(shapes).index(node)])
        return rng.integers(-q, q + 1, size=shapes[node], dtype=np.int8)

    @property
    def synthetic(self) -> bool:
        return self.synthetic_seed is not None

    # the dict on disk ---------------------------------------------------------------------------
    def to_blob(self) -> dict:
        import torch

        cfg = self.config
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        layers = []
        for i in range(cfg.n_layers):
            entry = {}
            for s in stages.LAYER_STATIC:
                if not self.synthetic:
                    entry[f"{s.name}.weight"] = t(self.weights[s.node(i)])
                entry[f"{s.name}.scale_fx"] = t(self.scales_fx[s.node(i)])
            entry[f"{stages.ENTRY_STAGE.name}.bias_fx"] = t(self.bias_fx[i])
            entry["v_range_fx"] = t(self.v_range_fx[i])
            entry["gamma"] = {p.name: self.gamma[p.tap(i)] for p in stages.LAYER_POINTS if p.gamma}
            layers.append(entry)
        head = {"scale_fx": t(self.scales_fx[stages.HEAD.name]), "gamma": self.gamma[stages.HEAD_IN.tap(None)]}
        if not self.synthetic:
            head["weight"] = t(self.weights[stages.HEAD.name])
        blob = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "config": cfg.to_dict(), "quant": self.quant.to_dict(), "tokenizer": dict(self.tokenizer),
            "embed_fx": t(self.embed_fx), "rope_cos_fx": t(self.rope_cos_fx), "rope_sin_fx": t(self.rope_sin_fx),
            "eps_fx": int(self.eps_fx), "layers": layers, "head": head,
        }
        if self.synthetic:
            blob["synthetic"] = {"seed": self.synthetic_seed}
        if self.rotation is not None:
            blob["rotation"] = {k: t(v) for k, v in self.rotation.items()}
        if self.balance is not None:
            blob["balance"] = {k: t(v) for k, v in self.balance.items()}
        if self.budget is not None:
            blob["budget"] = dict(self.budget)
        if self.calibration is not None:
            blob["calibration"] = self.calibration
        return blob

    @classmethod
    def from_blob(cls, blob, where: str = "model.pt") -> "ModelFile":
        """Validate every field of a model.pt dict: one FormatError line for the first violation."""
        d = Doc(blob, where)
        d.str("format", (FORMAT,))
        version = d.raw("format_version")
        if type(version) is not int or version not in READS:
            raise SdllmError(f"{where}: format_version {str(version)[:40]} is not supported (this sdllm reads "
                             f"{', '.join(map(str, READS))})")
        cfg = read_config(d.doc("config"))
        spec = read_quant(d.doc("quant"), version)
        try:
            spec.check_model(cfg)
        except SdllmError as e:
            raise SdllmError(f"{where}: quant: {e}") from None
        synthetic_seed = d.doc("synthetic").int("seed", -(1 << 63), (1 << 63) - 1) if d.has("synthetic") else None
        hd, lim = cfg.head_dim, FIXED_LIMIT
        weights, scales, gamma, bias, v_range = {}, {}, {}, [], []

        def static(doc: Doc, s: stages.Stage, node: str, prefix: str):
            if synthetic_seed is None:
                q_w = qmax(spec.weights_at(s, stages.layer_of(node)))
                weights[node] = doc.array(f"{prefix}weight", (s.n_out(cfg), s.n_in(cfg)), lo=-q_w, hi=q_w,
                                          dtypes=("int8",))
            scales[node] = doc.array(f"{prefix}scale_fx", (s.n_out(cfg),), lo=0, hi=lim)

        for i, layer in enumerate(d.items("layers", length=cfg.n_layers)):
            for s in stages.LAYER_STATIC:
                static(layer, s, s.node(i), f"{s.name}.")
            e = stages.ENTRY_STAGE
            bias.append(layer.array(f"{e.name}.bias_fx", (e.n_out(cfg),), lo=-lim, hi=lim))
            v_range.append(layer.array("v_range_fx", (cfg.n_kv_heads, cfg.head_dim), lo=1, hi=lim))
            g = layer.doc("gamma")
            for p in stages.LAYER_POINTS:
                if p.gamma:
                    gamma[p.tap(i)] = g.float(p.name, 0.0, 1.0, lo_open=True)
        head = d.doc("head")
        static(head, stages.HEAD, stages.HEAD.name, "")
        gamma[stages.HEAD_IN.tap(None)] = head.float("gamma", 0.0, 1.0, lo_open=True)
        embed = d.array("embed_fx", (cfg.vocab_size, cfg.dim), lo=-lim, hi=lim)
        rope = [d.array(k, (cfg.max_seq_len, hd // 2), lo=-lim, hi=lim) for k in ("rope_cos_fx", "rope_sin_fx")]
        as_np = lambda a: a.numpy() if hasattr(a, "numpy") else np.asarray(a)  # noqa: E731
        rotation = None
        if d.has("rotation"):
            r = d.doc("rotation")
            rotation = {"residual": as_np(r.array("residual", (cfg.dim, cfg.dim), "f", -1.0, 1.0, ("float64",)))}
            if r.has("heads"):
                rotation["heads"] = as_np(r.array("heads", (cfg.n_layers, hd, hd), "f", -1.0, 1.0, ("float64",)))
            for key, m in rotation.items():
                eye = np.eye(m.shape[-1])
                if np.abs(m @ np.swapaxes(m, -1, -2) - eye).max() > 1e-6:
                    r.fail(key, "orthogonal matrices", "a matrix that is not")
        learned = spec.rotate and spec.rotation == "learned" and synthetic_seed is None
        if learned != (rotation is not None):
            d.fail("rotation", "the learned rotation's matrices exactly when quant.rotation is 'learned' (rotated)",
                   "them" if rotation is not None else "none")
        if rotation is not None and spec.head_rotation != ("heads" in rotation):
            d.fail("rotation.heads", "present exactly when quant.head_rotation is true", "heads" in rotation)
        balance = None
        if d.has("balance"):
            b = d.doc("balance")
            shapes = {"down": (cfg.n_layers, cfg.ffn_dim), "values": (cfg.n_layers, cfg.n_kv_heads * hd)}
            balance = {k: as_np(b.array(k, shape, "f", 1.0 / BALANCE_LIMIT, BALANCE_LIMIT, ("float64",)))
                       for k, shape in shapes.items()}
        if (spec.balance > 0 and synthetic_seed is None) != (balance is not None):
            d.fail("balance", "channel scales exactly when quant.balance > 0 (not synthetic)",
                   "them" if balance is not None else "none")
        budget = None
        if d.has("budget"):
            b = d.doc("budget")
            budget = {}
            for key, (kind, lo, hi) in BUDGET_FIELDS.items():
                if key in BUDGET_DEFAULTS and not b.has(key):
                    budget[key] = BUDGET_DEFAULTS[key]
                    continue
                budget[key] = (b.str(key, max_length=200) if kind is str else b.int(key, lo, hi) if kind is int
                               else b.float(key, lo, hi))
        return cls(config=cfg, quant=spec, tokenizer=read_tokenizer(d.doc("tokenizer")), embed_fx=as_np(embed),
                   rope_cos_fx=as_np(rope[0]), rope_sin_fx=as_np(rope[1]), eps_fx=d.int("eps_fx", 0, lim),
                   scales_fx={k: as_np(v) for k, v in scales.items()}, gamma=gamma,
                   bias_fx=[as_np(b) for b in bias], v_range_fx=[as_np(v) for v in v_range],
                   weights={k: as_np(v) for k, v in weights.items()}, synthetic_seed=synthetic_seed,
                   rotation=rotation, balance=balance, budget=budget,
                   calibration=d.str("calibration", max_length=CALIBRATION_CHARS) if d.has("calibration") else None)

    def with_(self, **changes) -> "ModelFile":
        return ModelFile(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


# files ------------------------------------------------------------------------------------------

def save_blob(blob: dict, path: str) -> None:
    """torch.save into memory (so the archive's entry names do not carry a temporary file's name:
    the same contents give the same bytes), then an atomic write."""
    import torch

    buf = io.BytesIO()
    torch.save(blob, buf)
    write_file(buf.getvalue(), path)


def load_blob(path: str, expected_format: str) -> dict:
    """torch.load(weights_only=True) with every failure turned into one clear line."""
    import torch

    require_memory(files.regular_file(path), path)  # torch.load reads it whole
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))
        if code:
            raise SdllmError(f"{path}: refused to load: it references code ({code.group(1)}); only tensors and plain values are read") from None
        raise SdllmError(f"{path}: not a readable checkpoint (truncated or corrupt: not a tensor archive)") from None
    except Exception as e:  # noqa: BLE001 — torch's reader fails on damaged files with any type (IndexError, KeyError, struct.error...)
        raise SdllmError(f"{path}: not a readable checkpoint (truncated or corrupt: {type(e).__name__})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("format"), str) or blob["format"] != expected_format:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SdllmError(f"{path}: expected format '{expected_format}', found {' '.join(repr(got).split())[:60]}")
    return blob


def save(model: ModelFile, path: str) -> None:
    save_blob(model.to_blob(), path)


def load(path: str) -> ModelFile:
    return ModelFile.from_blob(load_blob(path, FORMAT), path)


__all__ = ["FORMAT", "FORMAT_VERSION", "FormatError", "LlamaConfig", "ModelFile", "QuantSpec", "load", "save"]
