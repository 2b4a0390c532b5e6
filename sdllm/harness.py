"""sdllm as an lm-evaluation-harness model: `--model sdllm` scores the integer reference, the
compiled network or the float model it came from, through the same tokenizer.

    sdllm-lm-eval --model sdllm --model_args model=X.pt,float=SRC,backend=integer --tasks piqa,arc_easy

model_args (comma-separated key=value, as the harness passes them):

  model=X.pt      the SDLLM (sdllm-convert's output): backend=integer runs its integer reference;
                  with backend=float it sets the context (its max_seq_len) and is checked to share
                  the float model's tokenizer
  float=SRC       the float model it was converted from (our float .pt, a Hugging Face directory
                  or a .gguf): backend=float scores it — the non-spiking baseline, same tokens
  backend=        integer (default) | fast (the compiled network: a build's synapse tables and
                  routes folded per stage, `sdllm.runtime.fast`; equal to Lava bit for bit) | float
  build=DIR       the build directory backend=fast runs (sdllm-compile's output)
  batch_size=N    float: sequences per forward (right-padded); integer and fast run one sequence
                  at a time and compute a context once for all its continuations
  max_gen_toks=N  generate_until's default limit (256)

`device` and `max_batch_size`, which the harness passes to every model, are ignored: every
backend runs on the CPU. A bad argument is one `SdllmError` line naming it, what is allowed and
what was given.

Log-likelihoods: the integer and fast backends' logits are exact integers (FRAC fixed point);
a continuation's log-likelihood is -Σ `sdllm.models.integer.likelihood.nll` of its rows in float64, the
same function `sdllm-eval`'s perplexities use. The float backend's are log_softmax of its float32
logits in float64. Contexts longer than the model's context are cut from the left; an empty
context is the BOS token (else EOS; for a byte model, the newline byte). Generation is greedy
(`do_sample=False`), stops at the stop sequences, the EOS token, `max_gen_toks` or the end of
the context.

The harness finds the model by name through its registry (`register_model`): lm-eval 0.4.x
before its plugin entry points (`lm_eval.models`, declared in pyproject.toml for the versions that
read them) does not import other packages' models, so `sdllm-lm-eval` (or
`python -m sdllm.cli.harness`) imports this module and then runs the harness's own command line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from sdllm import tokenizer
from sdllm.errors import SdllmError

NAME = "sdllm"
BACKENDS = ("integer", "fast", "float")
OPTIONS = ("model", "float", "backend", "build", "batch_size", "max_gen_toks")
HARNESS_OPTIONS = ("device", "max_batch_size")  # passed by the harness to every model; the CPU runs every backend
AUTO_BATCH = 16  # batch_size=auto
NEWLINE = 10  # the byte model's document separator (it has no special tokens)


def _bad(name: str, expected: str, got) -> SdllmError:
    return SdllmError(f"model_args {name}: {expected}, got {got!r:.80}")


def _positive_int(name: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str) and name == "batch_size" and value.startswith("auto"):
        return AUTO_BATCH
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(name, "an integer >= 1" + (" or auto" if name == "batch_size" else ""), value)
    return value


def _file(name: str, path, what: str, directory: bool = False) -> str:
    if not isinstance(path, str) or not path:
        raise _bad(name, f"a path ({what})", path)
    if not (os.path.isdir(path) if directory else os.path.exists(path)):
        raise _bad(name, f"an existing {'directory' if directory else 'path'} ({what})", path)
    return path


class _QuietOpenMP:
    """While held, torch's OpenMP workers sleep between parallel regions instead of spinning.

    With OMP_WAIT_POLICY unset when torch loads GNU libgomp (as when torch is imported before
    sdllm, whose import sets it to PASSIVE), a worker spins for ~3 ms after each GEMM — through
    the numba kernels that run between the exact products, on the cores they need. libgomp spins
    only 100 times when it manages more threads than there are CPUs (GOMP_SPINCOUNT in the
    libgomp manual), so a parked thread whose own team takes the count past the CPUs makes the
    policy effectively passive for as long as it is parked; its exit gives the count back.
    Harmless with another OpenMP runtime (two idle threads). Reentrant."""

    def __init__(self):
        self._depth, self._done, self._thread = 0, None, None

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            import torch

            main = torch.get_num_threads()
            team = max(2, len(os.sched_getaffinity(0)) - main + 2)  # main + (team - 1) > CPUs
            self._done, started = threading.Event(), threading.Event()

            def park():
                torch.set_num_threads(team)
                torch.ones(max(1 << 20, team << 16)).add_(1)  # one parallel region of `team` threads
                torch.set_num_threads(main)  # the global setting back; this thread's team stays docked
                started.set()
                self._done.wait()

            self._thread = threading.Thread(target=park, name="sdllm-quiet-openmp", daemon=True)
            self._thread.start()
            started.wait()
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._done.set()
            self._thread.join()


QUIET_OPENMP = _QuietOpenMP()


def _quiet(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with QUIET_OPENMP:
            return method(*args, **kwargs)

    return wrapper


def _float_row_logprobs(logits, targets) -> np.ndarray:
    """log p(target) per row of float logits (float64)."""
    import torch

    lp = torch.log_softmax(torch.as_tensor(logits).double(), -1)
    return lp.gather(-1, torch.as_tensor(targets, dtype=torch.long)[:, None])[:, 0].numpy()


@register_model(NAME)
class SdllmLM(TemplateLM):
    """An SDLLM (integer reference or compiled network) or its float model as a harness model."""

    def __init__(self, **args):
        super().__init__()
        unknown = sorted(set(args) - set(OPTIONS) - set(HARNESS_OPTIONS))
        if unknown:
            raise SdllmError(f"model_args: unknown argument(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        backend = args.get("backend", "integer")
        if backend not in BACKENDS:
            raise _bad("backend", f"one of {', '.join(BACKENDS)}", backend)
        self.backend_name = backend
        self.batch = _positive_int("batch_size", args.get("batch_size"), 1)
        self.max_gen_toks = _positive_int("max_gen_toks", args.get("max_gen_toks"), 256)
        model_path, float_src, build_path = args.get("model"), args.get("float"), args.get("build")
        self._prefix, self._last = None, None  # the context the exact executor's caches hold
        self.sdllm_model = None
        if model_path is not None or backend == "integer":
            from sdllm.formats import model as modelformat

            if model_path is None:
                raise _bad("model", "backend=integer scores an SDLLM: model=MODEL_PT (sdllm-convert's output)", None)
            self.sdllm_model = modelformat.load(_file("model", model_path, "an SDLLM, sdllm-convert's output"))
        if backend == "integer":
            from sdllm.models.integer.reference import IntegerSDLLM

            self.executor = IntegerSDLLM(self.sdllm_model)
            self.spec, self.L = self.sdllm_model.tokenizer, self.sdllm_model.config.max_seq_len
        elif backend == "fast":
            from sdllm.formats import build as buildformat
            from sdllm.runtime.fast import FoldedBuild

            if build_path is None:
                raise _bad("build", "backend=fast runs a compiled network: build=DIR (sdllm-compile's output)", None)
            network = buildformat.read(_file("build", build_path, "a build directory", directory=True))
            if self.sdllm_model is not None and (network.config != self.sdllm_model.config or network.tokenizer != self.sdllm_model.tokenizer):
                raise _bad("build", f"a build of model={model_path} (its config and tokenizer differ)", build_path)
            self.executor = FoldedBuild(network).executor()
            self.spec, self.L = network.tokenizer, network.config.max_seq_len
        else:
            from sdllm.models.source.importers import load_source

            if float_src is None:
                raise _bad("float", "backend=float scores the float model: float=SRC (a float .pt, a Hugging Face "
                           "directory or a .gguf)", None)
            context = self.sdllm_model.config.max_seq_len if self.sdllm_model is not None else None
            self.float_model, self.spec = load_source(_file("float", float_src, "a float model"), context)
            self.float_model.eval()
            if self.sdllm_model is not None and self.sdllm_model.tokenizer != self.spec:
                raise _bad("float", f"the float model of model={model_path} (their tokenizers differ)", float_src)
            self.L = self.float_model.cfg.max_seq_len
        if tokenizer.kind(self.spec) == "none":
            raise _bad("model", "a model with a tokenizer (this one takes token ids only: a synthetic model)", model_path)

    # what the harness asks of a model ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = tokenizer.eos_id(self.spec)
        return NEWLINE if eos is None else eos

    @property
    def prefix_token_id(self) -> int:
        bos = self.spec.get("bos_id")
        return self.eot_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self.L

    @property
    def tokenizer_name(self) -> str:
        return "sdllm-" + hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:16]

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.spec.get("chat_template") or ""

    def apply_chat_template(self, chat_history: list, add_generation_prompt: bool = True) -> str:
        from sdllm.chat import render

        return render(self.spec, chat_history, add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list:
        return tokenizer.encode(self.spec, string)

    def tok_decode(self, tokens) -> str:
        return tokenizer.decode(self.spec, tokens)

    # log-likelihoods -------------------------------------------------------------------------------
    def _window(self, context: list, continuation: list) -> tuple:
        """(prefix, continuation): the tokens before the continuation, cut from the left so that the
        model's input (prefix + continuation but its last token) fits its context."""
        if not continuation:
            raise SdllmError("loglikelihood: an empty continuation has no tokens to score")
        if len(continuation) > self.L:
            raise SdllmError(f"loglikelihood: a continuation of {len(continuation)} tokens does not fit the model's "
                             f"context of {self.L}")
        keep = self.L + 1 - len(continuation)
        return tuple(context[-keep:]), tuple(continuation)

    def _exact_rows(self, prefix: tuple, continuation: tuple) -> np.ndarray:
        """FRAC logits predicting each continuation token: the prefix runs once for all its
        continuations (the executor's KV caches keep it), each continuation after it."""
        ex = self.executor
        if prefix != self._prefix:
            ex.reset()
            self._prefix = None
            self._last = ex.forward(list(prefix), 0)[0][-1:]
            self._prefix = prefix
        if len(continuation) == 1:
            return self._last
        return np.concatenate([self._last, ex.forward(list(continuation[:-1]), len(prefix))[0]])

    @_quiet
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list:
        from sdllm.models.integer.likelihood import nll

        windows = [self._window(list(ctx), list(cont)) for _, ctx, cont in requests]
        results = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=f"sdllm {self.backend_name}", disable=True if disable_tqdm else None)
        if self.backend_name == "float":
            order = sorted(range(len(requests)), key=lambda i: (-sum(map(len, windows[i])), i))
            for start in range(0, len(order), self.batch):
                chunk = order[start : start + self.batch]
                for i, lp in zip(chunk, self._float_logprobs([windows[i] for i in chunk])):
                    results[i] = lp
                    self._cache_partial(requests[i], lp)
                bar.update(len(chunk))
        else:
            for i in sorted(range(len(requests)), key=lambda i: (windows[i], i)):  # a context's continuations together
                prefix, cont = windows[i]
                rows = self._exact_rows(prefix, cont)
                results[i] = (-float(nll(rows, np.asarray(cont)).sum()), bool((rows.argmax(-1) == cont).all()))
                self._cache_partial(requests[i], results[i])
                bar.update(1)
        bar.close()
        return results

    def _cache_partial(self, request, result) -> None:
        if request[0] is not None:
            self.cache_hook.add_partial("loglikelihood", request[0], result)

    def _float_logprobs(self, windows: list) -> list:
        """(log-likelihood, greedy) of each (prefix, continuation), one right-padded batch."""
        import torch

        inputs = [list(p) + list(c[:-1]) for p, c in windows]
        width = max(map(len, inputs))
        batch = torch.tensor([x + [0] * (width - len(x)) for x in inputs])
        with torch.no_grad():
            logits = self.float_model(batch)
        out = []
        for row, (p, c) in zip(logits, windows):
            rows = row[len(p) - 1 : len(p) - 1 + len(c)]
            lp = _float_row_logprobs(rows, c)
            out.append((float(lp.sum()), bool((rows.argmax(-1).numpy() == np.asarray(c)).all())))
        return out

    @_quiet
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
        """Each text's log-likelihood over the harness's rolling windows of the model's context
        (`lm_eval.utils.get_rolling_token_windows`: every token predicted once, with the most
        context a window allows), the first conditioned on the prefix token."""
        out = []
        for (text,) in tqdm([r.args for r in requests], desc="sdllm rolling", disable=True if disable_tqdm else None):
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.L, context_len=1)]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            total = sum(s for s, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    # generation -----------------------------------------------------------------------------------
    @_quiet
    def generate_until(self, requests, disable_tqdm: bool = False) -> list:
        out = []
        eos = tokenizer.eos_id(self.spec)
        for context, gen_kwargs in tqdm([r.args for r in requests], desc="sdllm generate", disable=True if disable_tqdm else None):
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise SdllmError(f"generate_until: sdllm generates greedily (do_sample=False), got {gen_kwargs!r:.80}")
            until = handle_stop_sequences(kwargs["until"], None if eos is None else self.tok_decode([eos]))
            limit = kwargs["max_gen_toks"]
            ids = self.tok_encode(context) or [self.prefix_token_id]
            ids = ids[-max(1, self.L - limit):]
            text = self._greedy(ids, limit, until, eos)
            text = postprocess_generated_text(text, until, None)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def _greedy(self, ids: list, limit: int, until: list, eos: int | None) -> str:
        """Greedy continuation of ids until a stop sequence appears, EOS, `limit` tokens or the end
        of the context; the text generated (EOS excluded)."""
        step = self._float_stepper(ids) if self.backend_name == "float" else self._exact_stepper(ids)
        pos, new, text = len(ids), [], ""
        row = next(step)
        while True:
            token = int(np.argmax(row))
            if token == eos:
                break
            new.append(token)
            text = self.tok_decode(new)
            if len(new) >= limit or pos >= self.L or any(s and s in text for s in until):
                break
            row = step.send(token)
            pos += 1
        step.close()
        return text

    def _exact_stepper(self, ids: list):
        ex = self.executor
        ex.reset()
        self._prefix = None
        logits, _ = ex.forward(ids, 0)
        pos = len(ids)
        while True:
            token = yield logits[-1]
            logits, _ = ex.forward([token], pos)
            pos += 1

    def _float_stepper(self, ids: list):
        import torch

        from sdllm.models.source.llama import KVCache

        cache = KVCache(self.float_model.cfg.n_layers)
        tokens = torch.tensor([ids])
        while True:
            with torch.no_grad():
                logits = self.float_model(tokens, cache=cache)
            token = yield logits[0, -1].numpy()
            tokens = torch.tensor([[token]])

    def get_model_info(self) -> dict:
        info = {"sdllm_backend": self.backend_name, "sdllm_context": self.L}
        if self.sdllm_model is not None:
            info["sdllm_precision"] = self.sdllm_model.quant.precision()
        return info
