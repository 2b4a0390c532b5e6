"""A zero-shot multiple-choice task that needs no download: name the standard-library function
from the first sentence of its docstring, among four functions of the same module.

Built from the Python that runs it (`sys.stdlib_module_names`, imported in a fresh isolated
interpreter, the module set of the out-of-domain perplexity corpus `sdllm.models.source.corpus`), with a
fixed seed, and written as an lm-evaluation-harness task: DIR/sdllm_docstrings.jsonl (one item a
line) and DIR/sdllm_docstrings.yaml (the task config over it). Generating twice gives the same
bytes (the YAML names the JSON-lines file by its absolute path: the harness's `json` loader
reads paths from the working directory). Data card: docs/docstring_task.md.

    .venv/bin/python benchmarks/docstring_task.py -o out/tasks     # then --include_path out/tasks
    .venv/bin/sdllm-lm-eval --model sdllm --model_args model=model.pt --tasks sdllm_docstrings --include_path out/tasks
"""

import argparse
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys

TASK = "sdllm_docstrings"
SEED = 0
ITEMS = 600  # at most; fewer if the stdlib offers fewer
PER_MODULE = 12  # at most this many questions from one module, so that no module dominates
CHOICES = 4
MIN_CHARS, MAX_CHARS = 20, 160  # the first sentence's length
SIGNATURE = re.compile(r"^[\w.]+\(.*\)")  # a C function's docstring may open with its signature


def first_sentence(doc: str | None) -> str | None:
    """The docstring's first sentence (whitespace collapsed, ending in '.'), skipping a leading
    signature paragraph; None if it has none of MIN_CHARS..MAX_CHARS characters."""
    if not doc:
        return None
    paragraphs = [" ".join(p.split()) for p in doc.strip().split("\n\n") if p.strip()]
    while paragraphs and SIGNATURE.match(paragraphs[0]):
        paragraphs.pop(0)
    if not paragraphs:
        return None
    text = paragraphs[0]
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    if not sentence.endswith(".") or not MIN_CHARS <= len(sentence) <= MAX_CHARS:
        return None
    return sentence


def collect() -> dict:
    """module -> {public function name: its first sentence or None}, for every stdlib module the
    perplexity corpus reads that comes from this Python's stdlib directories or is built in
    (functions defined in the module itself, builtins included)."""
    from sdllm.models.source.corpus import stdlib_modules

    out = {}
    for name, module in stdlib_modules():
        funcs = {}
        for attr in sorted(dir(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", None) == name and getattr(obj, "__name__", None) == attr:
                funcs[attr] = first_sentence(inspect.getdoc(obj))
        if funcs:
            out[name] = funcs
    return out


def collected() -> dict:
    """`collect()` run in a fresh isolated interpreter: what this process imported (torch patches
    some of the stdlib) does not change the task."""
    done = subprocess.run([sys.executable, "-I", os.path.abspath(__file__), "--collect"], capture_output=True, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SystemExit(f"docstring task: the collector failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return json.loads(done.stdout)


def _key(seed: int, *parts: str) -> str:
    """A fixed pseudo-random order: the same for every Python version and hash seed."""
    return hashlib.sha256("/".join([str(seed), *parts]).encode()).hexdigest()


def _mentions(sentence: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", sentence, re.IGNORECASE) is not None


def items(functions: dict, seed: int = SEED, n_items: int = ITEMS) -> list:
    """The task's items from `collect()`'s functions. A question is a function whose first sentence
    names none of the four choices and is no other function's of its module; its three
    distractors are functions of the same module (seeded order). The answer's position cycles
    through 0..3, so each position holds a quarter of the answers."""
    candidates = []
    for module, funcs in sorted(functions.items()):
        if len(funcs) < CHOICES:
            continue
        counts = {}
        for s in funcs.values():
            counts[s] = counts.get(s, 0) + 1
        questions = []
        for name, sentence in sorted(funcs.items()):
            if sentence is None or counts[sentence] > 1 or _mentions(sentence, name):
                continue
            others = sorted((n for n in funcs if n != name and not _mentions(sentence, n)),
                            key=lambda n: _key(seed, module, name, n))  # noqa: B023
            if len(others) >= CHOICES - 1:
                questions.append((_key(seed, module, name), module, name, sentence, others[: CHOICES - 1]))
        candidates += sorted(questions)[:PER_MODULE]
    out = []
    for i, (_, module, name, sentence, distractors) in enumerate(sorted(candidates)[:n_items]):
        label = i % CHOICES
        choices = [*distractors[:label], name, *distractors[label:]]
        out.append({"id": f"{module}.{name}", "module": module, "sentence": sentence, "choices": choices, "label": label,
                    "question": f"Question: In Python's {module} module, which function is documented as \"{sentence}\"\nAnswer:"})
    return out


def task_yaml(jsonl_path: str, seed: int) -> str:
    return "\n".join([
        f"task: {TASK}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(jsonl_path)}",
        "test_split: test",
        "output_type: multiple_choice",
        "doc_to_text: question",
        "doc_to_choice: choices",
        "doc_to_target: label",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "  - metric: acc_norm",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        f"  seed: {seed}",
        f"  python: \"{sys.version_info.major}.{sys.version_info.minor}\"",
        "",
    ])


def write(out_dir: str, seed: int = SEED, n_items: int = ITEMS) -> tuple:
    """DIR/sdllm_docstrings.jsonl and .yaml (the same bytes every time for a Python version and
    directory); returns (jsonl path, yaml path, items)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = items(collected(), seed, n_items)
    jsonl = os.path.abspath(os.path.join(out_dir, f"{TASK}.jsonl"))
    config = os.path.join(out_dir, f"{TASK}.yaml")
    for path, text in ((jsonl, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)),
                       (config, task_yaml(jsonl, seed))):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    return jsonl, config, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", default=os.path.join("out", "tasks"), help="directory for the task's two files")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--items", type=int, default=ITEMS)
    ap.add_argument("--collect", action="store_true", help=argparse.SUPPRESS)  # the fresh interpreter's part
    args = ap.parse_args(argv)
    if args.collect:
        sys.stdout.write(json.dumps(collect(), sort_keys=True))
        return
    jsonl, config, rows = write(args.out, args.seed, args.items)
    modules = len({r["module"] for r in rows})
    print(f"{len(rows)} items from {modules} modules (seed {args.seed}, Python {sys.version.split()[0]}): {jsonl}, {config}")


if __name__ == "__main__":
    main()
