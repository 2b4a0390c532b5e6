"""sdllm's Python API: convert a float model to an SDLLM, compile it for a chip, run the build,
and read the mapping and run reports as objects. The command-line tools are thin layers over it.

    import sdllm

    model = sdllm.convert()                                   # the embedded default model -> W4A4 SDLLM
    build = sdllm.compile(model, "loihi2", "build")           # -> sdllm.Build (a build directory)
    print(build.report.cores_used, build.report.timesteps_per_token)
    run = build.run("The if statement", max_new_tokens=8, backend="lockstep")
    print(run.text, run.sops_per_token, run.energy["energy_per_token_uj"])
    run.report().write("run_report")                          # run.html + run.json

Errors a user can cause (a bad path, an impossible request) raise `sdllm.SdllmError` with a
one-line message.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from sdllm import arguments, codes, tokenizer
from sdllm.errors import SdllmError
from sdllm.formats import build as buildformat
from sdllm.formats import files
from sdllm.formats import hw as hwformat
from sdllm.formats import model as modelformat
from sdllm.formats.fields import shown
from sdllm.formats.model import ModelFile, QuantSpec

__all__ = ["Build", "MappingReport", "Model", "Run", "RunReport", "compile", "convert", "load_build",
           "load_model", "run"]


SEED_RANGE = (0, (1 << 32) - 1)  # of a conversion's random rotation


class _Report:
    """A report dict with its keys readable as attributes (`report.cores_used`)."""

    def __init__(self, data: dict):
        self.data = data

    def __getattr__(self, name):
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r} (fields: {', '.join(sorted(self.data))})") from None

    def __getitem__(self, key):
        return self.data[key]

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True, indent=1) + "\n"

    def _repr_html_(self) -> str:
        """Jupyter shows the report's page (`html`), framed so that its style stays inside."""
        from sdllm.pages import frame

        return frame(self.html)


class MappingReport(_Report):
    """The core-mapping report of a build (report.json as data): cores used against the lower
    bound, chips, placement traffic, the schedule, per core, chip and layer."""

    @property
    def text(self) -> str:
        from sdllm.compiler.report import format_report

        return format_report(self.data)

    @property
    def html(self) -> str:
        from sdllm.compiler.html_report import format_html

        return format_html(self.data)

    def __str__(self) -> str:
        return self.text


class RunReport(_Report):
    """What a run did on the chip (`sdllm.runtime.run_report`): SOPs and spikes per core (with
    mesh positions), per stage and per layer, the energy breakdown, measured chip-to-chip traffic
    and a raster of one token's phases."""

    @property
    def html(self) -> str:
        from sdllm.runtime.run_page import format_html

        return format_html(self.data)

    def write(self, out_dir: str, flag: str = "") -> list:
        """run.json and run.html into out_dir (created if missing); returns their paths. flag: how
        the caller names out_dir in an error line (e.g. '--report')."""
        from sdllm.runtime.run_report import write

        return write(arguments.path(flag or "out_dir", out_dir), self.data, flag)


class Model:
    """An SDLLM (what model.pt holds): integer weights, scales, spike codes, its tokenizer."""

    def __init__(self, file: ModelFile):
        self.file = file

    @property
    def config(self):
        return self.file.config

    @property
    def quant(self) -> QuantSpec:
        return self.file.quant

    @property
    def tokenizer(self) -> dict:
        return self.file.tokenizer

    def save(self, path: str) -> str:
        modelformat.save(self.file, path)
        return path

    def compile(self, target: str = "loihi2", output: str = "build", **options) -> Build:
        """`sdllm.compile(self, target, output, **options)`."""
        return compile(self, target, output, **options)

    def reference(self):
        """The integer reference (`sdllm.models.integer.reference.IntegerSDLLM`): the oracle a compiled network equals."""
        from sdllm.models.integer.reference import IntegerSDLLM

        return IntegerSDLLM(self.file)

    def __repr__(self) -> str:
        c = self.config
        return f"<sdllm.Model {self.quant.describe()}, dim {c.dim}, {c.n_layers} layers, vocab {c.vocab_size}>"


def convert(src: str | None = None, quant: QuantSpec | None = None, *, max_seq_len: int | None = None,
            calib_windows: int = 64, calib_text=(), progress: bool = False, rotation_from=None,
            budget: float | None = None, budget_windows: int = 4, target: str | None = None, **quant_fields) -> Model:
    """A float LLaMA-family checkpoint -> an SDLLM.

    src: our float .pt (default: the embedded default model), a Hugging Face directory or a
    .gguf. quant: a `QuantSpec`, or its fields as keywords (weight_bits=4, act_bits=4, ...).
    γ, GPTQ, the learned rotation and the channel balancing are calibrated on `calib_windows`
    windows of the default mixture of prose that ships with Python (`corpus.calibration_windows`:
    the language reference before the held-out part, IDLE's manual, release notes, readmes and
    licence; never docstrings, the out-of-domain text), or of `calib_text` (paths of UTF-8 or
    JSON-lines files) instead; model.pt records which (`calibration`). rotation_from: a `Model` or model.pt path of the same
    float model whose learned rotation is used as it is (no learning: e.g. other bits, same rotation).

    budget: a calibration perplexity ratio to float (e.g. 1.3): bits per point and per layer are
    then chosen from `quant` upwards (`sdllm.models.conversion.budget`): candidates ranked on
    `budget_windows` windows of the calibration text that the conversion did not fit to and the
    choice measured on as many others, for the least SOPs per token (with `target`, a hw config
    name or path: its energy estimate, and the choice must fit its cores — counted by the compiler's
    tiling, `sdllm.compiler.fit` — raised weights dropped where they do not). A budget no allocation
    reaches raises `BudgetUnreachable` (an SdllmError and a ValueError) naming the best reachable
    ratio; one whose allocations found do not fit the target, `TargetTooSmall` (the same kinds)."""
    from sdllm.models.conversion.convert import convert as convert_model
    from sdllm.models.source.corpus import calibration_name, calibration_tokens
    from sdllm.models.source.importers import load_source

    if src is not None:
        src = arguments.path("src", src)
    if max_seq_len is not None:
        max_seq_len = arguments.integer("--max-seq-len", max_seq_len, 2, None, "must be at least 2")
    calib_windows = arguments.integer("--calib-windows", calib_windows, 1, None, "must be at least 1")
    calib_text = arguments.paths("--calib-text", calib_text)
    arguments.boolean("progress", progress)
    if budget is not None:
        budget = arguments.number("--budget", budget, 1, 1000, "must be within 1..1000 (a ratio to float perplexity)")
        budget_windows = arguments.integer("--budget-windows", budget_windows, 1, None, "must be at least 1")
    if target is not None:
        if budget is None:
            raise SdllmError("--target: prices a --budget search; give --budget too")
        target = arguments.text("--target", target)
    if quant is not None and quant_fields:
        raise SdllmError("convert: give a QuantSpec or its fields as keywords, not both")
    unknown = set(quant_fields) - set(QuantSpec.__dataclass_fields__)
    if unknown:
        raise SdllmError(f"convert: unknown option(s) {', '.join(sorted(unknown))} "
                         f"(QuantSpec fields: {', '.join(QuantSpec.__dataclass_fields__)})")
    if quant is not None and not isinstance(quant, QuantSpec):
        arguments.fail("quant", "a QuantSpec or None", quant)
    spec = QuantSpec(**quant_fields) if quant is None else quant  # a QuantSpec checks itself
    rotation = None
    if rotation_from is not None:
        if not spec.rotate:
            raise SdllmError("--rotation-from: gives a learned rotation, but --no-rotate asks for none")
        if spec.rotation != "learned":
            raise SdllmError(f"--rotation-from: gives a learned rotation, but rotation is {spec.rotation!r}")
        donor = rotation_from if isinstance(rotation_from, Model) else _rotation_donor(rotation_from)
        if donor.file.rotation is None:
            raise SdllmError(f"--rotation-from: {rotation_from} holds no learned rotation (converted with rotation "
                             f"{donor.quant.rotation!r})")
        rotation = donor.file.rotation
    hw = hwformat.load(target) if target is not None else None  # a bad target fails before any work
    energy = hw.energy if hw is not None else None
    float_model, tok = load_source(src, max_seq_len)
    spec.check_model(float_model.cfg)  # a wide group as wide as the model: one line, before any work
    if rotation is not None:
        from sdllm.models.conversion.convert import given_rotation

        given_rotation(float_model.cfg, spec, rotation)  # a donor for another model: one line, before any output
    calib = calibration_tokens(tok, float_model.cfg.max_seq_len, calib_windows, calib_text)
    if budget is not None:  # windows of the same text the conversion does not fit to: known before any work
        rows = np.asarray(calibration_tokens(tok, float_model.cfg.max_seq_len, 2 * budget_windows, calib_text,
                                             skip=calib_windows))
        if len(rows) < 2:
            raise SdllmError(f"--budget-windows: the budget search needs 2 windows of {calib.shape[1]} tokens beside the "
                             f"{len(calib)} the conversion fits to; the calibration text has {len(rows)} left (give "
                             f"more text or fewer --calib-windows)")
    calibration = f"{len(calib)} windows of {calib.shape[1]} tokens: {calibration_name(calib_text)}"
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else (lambda line: None)
    if budget is None:
        model = convert_model(float_model, spec, calib, tok, progress=progress, rotation=rotation)
        log(f"calibration text: {calibration}")  # once done: a run cut short prints one line, its reason
        return Model(model.with_(calibration=calibration))
    log(f"calibration text: {calibration}")
    from sdllm.models.conversion.budget import HIGH_BITS, search
    from sdllm.models.conversion.convert import convert_with_alternatives

    base, alt = convert_with_alternatives(float_model, spec, calib, tok, progress, rotation, high_bits=HIGH_BITS)
    fit = None
    if hw is not None:
        from sdllm.compiler.fit import cores_needed
        from sdllm.models.conversion.target_fit import TargetFit

        fit = TargetFit(lambda model: cores_needed(model, hw), target)
        fit.check_start(base, budget)  # before the search: if nothing raised does not fit, nothing does
        log(f"cores on {fit.start.describe()} with nothing raised")
    model = search(float_model, base, alt, rows, budget, energy, target or "", progress, log, fit)
    return Model(model.with_(calibration=calibration))


def _rotation_donor(path) -> Model:
    path = arguments.path("--rotation-from", path)
    try:
        files.regular_file(path)
    except SdllmError as e:
        raise SdllmError(f"--rotation-from: {e}") from None
    return load_model(path)


def load_model(path: str) -> Model:
    """A model.pt written by `convert` or sdllm-convert (validated)."""
    return Model(modelformat.load(arguments.path("path", path)))


def compile(model: Model | ModelFile | str, target: str = "loihi2", output: str = "build", *,
            placement: str = "traffic", rate_tokens: int = 128, code: str = "auto", progress: bool = False) -> Build:
    """Compile an SDLLM (a `Model`, or a model.pt path) for a target (a name in hw_configs/ or a
    YAML path) into the build directory `output` (written atomically); returns it as a `Build`.
    code: how each stage's input travels — chosen by the compiler ('auto'), the paper's ternary
    trains ('paper'), or one code everywhere (ternary, bitplane, naf, graded)."""
    from sdllm import resources
    from sdllm.compiler.emit import emit
    from sdllm.compiler.pipeline import compile_model, passes
    from sdllm.compiler.place import METHODS

    if not isinstance(model, (Model, ModelFile)):
        model = arguments.path("model", model)
    target = arguments.path("target", target)
    output = arguments.path("output", output)
    arguments.text("--placement", placement, METHODS)
    rate_tokens = arguments.integer("--rate-tokens", rate_tokens, 0, None, "must be >= 0")
    arguments.text("--code", code, codes.CHOICES)
    arguments.boolean("progress", progress)
    buildformat.check_target(output)  # before any work: the place to write it is there and ours to replace
    where = model if isinstance(model, str) else "the model"
    file = model.file if isinstance(model, Model) else model if isinstance(model, ModelFile) else modelformat.load(model)
    spec = file.quant
    resources.require_memory(resources.compile_bytes(file.config, file.synthetic, rate_tokens, spec.widest_weights(), spec.widest_values()), where)
    report = emit(compile_model(file, target, passes(placement, rate_tokens, progress=progress, code=code)), output, progress=progress)
    return Build(output, report, read=False)


def load_build(path: str) -> Build:
    """A build directory written by `compile` or sdllm-compile (validated)."""
    return Build(path)


class Build:
    """A compiled network (a build directory): run it, read its mapping report, or take it into
    your own Lava graph as a Process (`process`)."""

    def __init__(self, path: str, report: dict | None = None, read: bool = True):
        """read: validate and load the network now (else on first use: a compile that only
        reports does not hold its whole build in memory)."""
        self.path = arguments.path("path", path)
        self._network = buildformat.read(self.path) if read else None
        self._report = report

    @property
    def network(self):
        """The build as the runtime reads it (`sdllm.formats.build.Build`)."""
        if self._network is None:
            self._network = buildformat.read(self.path)
        return self._network

    @property
    def config(self):
        return self.network.config

    @property
    def tokenizer(self) -> dict:
        return self.network.tokenizer

    @property
    def period(self) -> int:
        """Timesteps per token (the compiled schedule)."""
        return self.network.schedule.period

    @property
    def interval(self) -> int:
        """Timesteps between a prompt's positions (the pipelined schedule's initiation interval)."""
        return self.network.schedule.interval

    @property
    def report(self) -> MappingReport:
        """The core-mapping report (report.json)."""
        if self._report is None:
            path = os.path.join(self.path, "report.json")
            if not os.path.isfile(path):
                raise SdllmError(f"{self.path}: no report.json (the build's mapping report)")
            with open(path, encoding="utf-8") as f:
                self._report = json.load(f)
        return MappingReport(self._report)

    def encode(self, text: str) -> list:
        return tokenizer.encode(self.tokenizer, arguments.text("text", text))

    def decode(self, ids) -> str:
        return tokenizer.decode(self.tokenizer, ids)

    def chat_prompt(self, messages) -> list:
        """Token ids of a conversation (text: one user message) in the model's own chat template,
        ending where the assistant's reply begins."""
        from sdllm.chat import render

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if not isinstance(messages, (list, tuple)):
            arguments.fail("prompt", "with chat: a message (text) or a list of {'role', 'content'} dicts", messages)
        return self.encode(render(self.tokenizer, list(messages)))

    def run(self, prompt, max_new_tokens: int = 16, *, backend: str = "lava", granularity: str = "auto",
            chat: bool = False, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
            stop_at_eos: bool = True, on_token=None, on_text=None, progress: bool = False) -> Run:
        """Generate from `prompt` on a backend ("lava": Lava's Loihi2SimCfg; "lockstep": the same
        cores in one process; "fast": without stepping). All three give the same tokens, logits
        and per-core SOPs.

        prompt: text, token ids, or (with chat=True, or a list of {"role", "content"} dicts) a
        conversation put through the model's chat template. temperature 0 is greedy; otherwise
        sampling with top_k, top_p and seed — the same tokens on every backend for a seed.
        stop_at_eos: stop after the tokenizer's end-of-sequence token. on_token(id) and
        on_text(str) are called as tokens are produced (streaming)."""
        from sdllm.runtime.backends import run as run_backend
        from sdllm.runtime.sampling import Sampler

        for name, value in (("chat", chat), ("stop_at_eos", stop_at_eos), ("progress", progress)):
            arguments.boolean(name, value)
        arguments.callback("on_token", on_token)
        arguments.callback("on_text", on_text)
        ids = self._prompt_ids(prompt, chat)
        sampler = Sampler(temperature, top_k, top_p, seed)
        eos = tokenizer.eos_id(self.tokenizer) if stop_at_eos else None
        stream = tokenizer.TextStream(self.tokenizer) if on_text is not None else None

        def produced(token):
            if on_token is not None:
                on_token(token)
            if stream is not None and token != eos:
                text = stream.push(token)
                if text:
                    on_text(text)

        t0 = time.time()
        result = run_backend(self.network, ids, max_new_tokens, backend, granularity, progress=progress, sampler=sampler,
                             eos_id=eos, on_token=produced if (on_token or on_text) else None)
        if stream is not None and (rest := stream.flush()):
            on_text(rest)
        return Run(self, result, ids, backend, sampler, eos, time.time() - t0)

    def run_batch(self, prompts, max_new_tokens: int = 16, *, backend: str = "lava", granularity: str = "auto",
                  chat: bool = False, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                  stop_at_eos: bool = True, progress: bool = False) -> list:
        """Generate from several prompts in one run: their sequences side by side in the network's
        KV caches, sharing its layer pipeline, so a batch takes fewer timesteps than its prompts one
        after another. A `Run` per prompt, each with the tokens, logits and per-core SOPs it gets
        alone (`run`) and its timesteps from the batch's first step to its own last logits.
        prompts: a list of what `run` takes as a prompt; together they must fit the context."""
        from sdllm.runtime.backends import run_batch as run_backend_batch
        from sdllm.runtime.requests import check_prompt_list
        from sdllm.runtime.sampling import Sampler

        for name, value in (("chat", chat), ("stop_at_eos", stop_at_eos), ("progress", progress)):
            arguments.boolean(name, value)
        check_prompt_list(prompts)  # before encoding them
        ctx = self.config.max_seq_len
        if len(prompts) > ctx:  # before encoding them: each needs a position at least
            raise SdllmError(f"batch: {len(prompts):,} prompts need {len(prompts):,} positions at least, the context holds {ctx}")
        ids = [self._prompt_ids(p, chat) for p in prompts]
        sampler = Sampler(temperature, top_k, top_p, seed)
        eos = tokenizer.eos_id(self.tokenizer) if stop_at_eos else None
        t0 = time.time()
        results = run_backend_batch(self.network, ids, max_new_tokens, backend, granularity, progress=progress,
                                    sampler=sampler, eos_id=eos)
        wall = time.time() - t0
        return [Run(self, r, p, backend, sampler, eos, wall) for r, p in zip(results, ids)]

    def _prompt_ids(self, prompt, chat: bool) -> list:
        """Token ids of a prompt: text, token ids, or chat messages (the model's template)."""
        if chat or (isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict)):
            return self.chat_prompt(prompt)
        if isinstance(prompt, str):
            return self.encode(prompt)
        try:
            return [operator.index(t) for t in prompt]
        except TypeError:
            raise SdllmError(f"prompt: text, token ids (integers) or chat messages, got {shown(repr(prompt))}") from None

    def process(self, **options):
        """The network as a Lava Process (`sdllm.runtime.lava_procs.network.SDLLM`): token ids in,
        next token and logits out, one token per `period` timesteps. options: n_positions,
        granularity, temperature, top_k, top_p, seed, name."""
        from sdllm.runtime.lava_procs.network import SDLLM

        return SDLLM(build=self.network, **options)

    def __repr__(self) -> str:
        return f"<sdllm.Build {self.path!r}: {len(self.network.cores)} cores, {self.period} timesteps per token>"


@dataclass
class Run:
    """One generation: tokens, logits (exact integers, FRAC fixed point), per-core SOPs, timesteps,
    NoC traffic, the energy estimate; `report()` for where it all happened on the chip."""

    build: Build
    result: object  # sdllm.runtime.result.RunResult
    prompt_tokens: list
    backend: str
    sampler: object  # sdllm.runtime.sampling.Sampler
    eos_id: int | None
    wall_s: float
    _energy: dict | None = field(default=None, repr=False)

    @property
    def tokens(self) -> list:
        """Prompt and generated token ids."""
        return self.result.tokens

    @property
    def generated(self) -> list:
        return self.result.tokens[len(self.prompt_tokens):]

    @property
    def stopped_at_eos(self) -> bool:
        return self.eos_id is not None and bool(self.generated) and self.generated[-1] == self.eos_id

    @property
    def text(self) -> str:
        """The generated text (without the end-of-sequence token)."""
        ids = self.generated[:-1] if self.stopped_at_eos else self.generated
        return self.build.decode(ids)

    @property
    def logits(self) -> np.ndarray:
        return self.result.logits

    @property
    def core_sops(self) -> dict:
        return self.result.core_sops

    @property
    def sops_per_token(self) -> float:
        return float(self.result.sops_per_token().mean())

    @property
    def timesteps(self) -> int:
        return self.result.timesteps

    @property
    def energy(self) -> dict:
        """Energy and latency per token (`sdllm.runtime.energy.estimate`)."""
        if self._energy is None:
            from sdllm.runtime import energy

            self._energy = energy.estimate(self.build.network, self.result)
        return self._energy

    def report(self, raster_position: int | None = 0, progress: bool = False) -> RunReport:
        """The run report, with a raster of one position's token period (None: no raster),
        recorded by replaying the run's tokens up to it in the lockstep simulator (so position 0,
        the default, costs one period; a later one replays all before it)."""
        from sdllm.runtime.run_report import run_report
        from sdllm.runtime.trace import trace_token

        if raster_position is not None:
            arguments.integer("raster_position", raster_position, 0, len(self.logits) - 1,
                              f"0..{len(self.logits) - 1} (the run's positions)")
        arguments.boolean("progress", progress)
        trace = None if raster_position is None else trace_token(self.build.network, self.tokens, raster_position,
                                                                 progress=progress)
        return RunReport(run_report(self.build.network, self.result, self.prompt_tokens, self.backend, self.sampler, trace,
                                    self.text))


def run(build: str | Build, prompt, max_new_tokens: int = 16, **options) -> Run:
    """`load_build(build).run(prompt, max_new_tokens, **options)`."""
    b = build if isinstance(build, Build) else load_build(build)
    return b.run(prompt, max_new_tokens, **options)
