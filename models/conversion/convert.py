"""Float LLaMA -> SDLLM: γ-SQP step 1 (the rotation of `sdllm.models.conversion.rotation` and the channel
balancing of `sdllm.models.conversion.balance`, then γ-quantile per-token scales calibrated on text) and
per-output-channel symmetric integer weights (GPTQ or round-to-nearest, `sdllm.models.conversion.gptq`).

Step 2 (integer -> bidirectional ternary spike train, T = 2**(b-1) - 1 timesteps) is what the
compiled network does with the integers this module fixes; other codes are compared in
`sdllm.models.encodings`. The quantisation points and stages are `sdllm.stages`'; the result is
a `sdllm.formats.model.ModelFile` (what model.pt holds).
"""


import numpy as np

from sdllm import stages
from sdllm.errors import SdllmError
from sdllm.formats.model import ModelFile, QuantSpec
from sdllm.models.conversion import gptq
from sdllm.models.conversion.balance import balance, balance_scales, input_rms
from sdllm.models.conversion.calibration import CalibrationStats
from sdllm.models.conversion.clipping import calibrate_dead_zones, with_thetas
from sdllm.models.conversion.learned_rotation import RotationTraining, learn_rotations
from sdllm.models.conversion.matrices import entry_bias, stage_matrices
from sdllm.models.conversion.rotation import prepare_as
from sdllm.models.integer import fixedpoint as fx
from sdllm.models.source.llama import Llama, rope_tables


def quantize_weight(w, bits: int, hessian=None):
    """Per-output-channel symmetric integer weights: GPTQ given the input Hessian, else
    round-to-nearest with max scaling. Returns (int8 weights, SCALE_FRAC scales) as numpy."""
    w_int, scale = gptq.rtn(w, bits) if hessian is None else gptq.gptq(w, hessian, bits)
    return w_int.numpy(), fx.to_fixed(scale.double().numpy(), fx.SCALE_FRAC)


def given_rotation(cfg, spec: QuantSpec, rotation: dict) -> dict | None:
    """A learned rotation handed to `convert`, checked against the model, as far as the spec uses it."""
    if not spec.rotate:
        return None
    if spec.rotation != "learned":
        raise SdllmError(f"convert: a given rotation needs rotation 'learned' in the spec, got {spec.rotation!r}")
    shapes = {"residual": (cfg.dim, cfg.dim), "heads": (cfg.n_layers, cfg.head_dim, cfg.head_dim)}
    wanted = ("residual", "heads") if spec.head_rotation else ("residual",)
    for key in wanted:
        got = np.shape(rotation.get(key))
        if got != shapes[key]:
            raise SdllmError(f"convert: the given rotation's {key!r} must be {shapes[key]} for this model, got {got}")
    return {key: np.asarray(rotation[key], np.float64) for key in wanted}


def convert(model: Llama, spec: QuantSpec, calib_tokens, tokenizer: dict, progress: bool = False,
            rotation: dict | None = None) -> ModelFile:
    """Float model + calibration text -> the SDLLM. rotation: a learned rotation to use as it is
    ({'residual', 'heads'} as model.pt stores it, e.g. another conversion's) instead of learning one."""
    return convert_with_alternatives(model, spec, calib_tokens, tokenizer, progress, rotation)[0]


def convert_with_alternatives(model: Llama, spec: QuantSpec, calib_tokens, tokenizer: dict, progress: bool = False,
                              rotation: dict | None = None, high_bits: int | None = None) -> tuple:
    """`convert`, and with high_bits what every budget candidate needs from the same calibration
    pass (`sdllm.models.conversion.budget`): (the SDLLM, {'bits': high_bits, 'weights': {node:
    int8 weights at high_bits}, 'scales': {node: their scales}, 'gamma': {tap: γ of the point at
    high_bits}} or None). Nothing is calibrated twice: the rotation, balancing, Hessians and γ
    errors are shared."""
    from tqdm import tqdm

    from sdllm.formats.model import Precision

    cfg = model.cfg
    if cfg.dim % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise SdllmError(f"model config: dim {cfg.dim} must divide by n_heads {cfg.n_heads}, "
                         f"and n_heads by n_kv_heads {cfg.n_kv_heads}")
    if rotation is not None:
        rotation = given_rotation(cfg, spec, rotation)
    elif spec.rotate and spec.rotation == "learned":
        r1, r2, _ = learn_rotations(model.eval(), spec, calib_tokens,
                                    RotationTraining(steps=spec.rotation_steps, heads=spec.head_rotation), progress)
        rotation = {"residual": r1.numpy()} | ({"heads": r2.numpy()} if r2 is not None else {})
    prepared = prepare_as(model.eval(), spec, rotation)
    channels = None
    if spec.balance:
        channels = balance_scales(prepared, input_rms(prepared, calib_tokens), spec.balance)
        prepared = balance(prepared, channels)
        channels = {k: v.numpy() for k, v in channels.items()}
    cfg = prepared.cfg
    # an input channel's quantisation error costs the squared column norm of the weights reading it
    channel_weight = {tap: (w**2).sum(0).float() for _, tap, w in stage_matrices(prepared)}
    menu = {p.name: [Precision(high_bits, spec.at(p, None).theta)] for p in stages.POINTS.values() if p.gamma} if high_bits else None
    stats = CalibrationStats(spec, channel_weight, spec.calibrate_gamma, spec.gptq, menu=menu)
    stats.run(prepared, tqdm(calib_tokens, desc="calibration", disable=None if progress else True, leave=False))

    weights, scales = {}, {}
    alt = {"bits": high_bits, "weights": {}, "scales": {}, "gamma": {}} if high_bits else None
    n_static = len(stages.static_shapes(cfg))
    for name, tap, w in tqdm(stage_matrices(prepared), total=n_static, desc="GPTQ" if spec.gptq else "RTN",
                             disable=None if progress else True, leave=False):
        hessian = stats.hessian(tap) if spec.gptq else None
        weights[name], scales[name] = quantize_weight(w, spec.weights_at(stages.stage_of(name), stages.layer_of(name)), hessian)
        if alt:
            alt["weights"][name], alt["scales"][name] = quantize_weight(w, high_bits, hessian)
    points = [(p, i) for i in range(cfg.n_layers) for p in stages.LAYER_POINTS if p.gamma] + [(stages.HEAD_IN, None)]
    gamma = {p.tap(i): stats.gamma(p.tap(i)) for p, i in points}
    if alt:
        alt["gamma"] = {p.tap(i): stats.gamma(p.tap(i), Precision(high_bits, spec.at(p, None).theta)) for p, i in points}
    cos, sin = rope_tables(cfg, cfg.max_seq_len)
    sdllm = ModelFile(
        config=cfg,
        quant=spec,
        tokenizer=dict(tokenizer),
        embed_fx=fx.to_fixed(prepared.embed.weight.detach().double().numpy()),
        rope_cos_fx=fx.to_fixed(cos.numpy(), fx.TRIG_FRAC),
        rope_sin_fx=fx.to_fixed(sin.numpy(), fx.TRIG_FRAC),
        eps_fx=int(round(cfg.norm_eps * (1 << (2 * fx.FRAC)))),
        scales_fx=scales,
        gamma=gamma,
        bias_fx=[fx.to_fixed(entry_bias(prepared, i).numpy()) for i in range(cfg.n_layers)],
        v_range_fx=[np.maximum(fx.to_fixed(stats.v_range[stages.VALUE.tap(i)].numpy()), 1) for i in range(cfg.n_layers)],
        weights=weights,
        rotation=rotation,
        balance=channels,
    )
    if spec.clip_budget > 0:
        thetas, _ = calibrate_dead_zones(sdllm, np.asarray(calib_tokens), spec.clip_budget, progress)
        sdllm = with_thetas(sdllm, dict(spec.thetas) | dict(thetas))
    return sdllm, alt
