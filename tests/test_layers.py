"""The package layers (docs/DESIGN.md §8), checked on the source: every import of every module, and where
the stage names are spelled."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"sdllm": "sdllm", "models": "sdllm.models", "cores": "sdllm.cores", "compiler": "sdllm.compiler",
            "runtime": "sdllm.runtime", "hw_configs": "sdllm.hw_configs"}
TOP = ("sdllm.cli", "sdllm.api", "sdllm.harness")  # the command-line layer, the public API, the lm-eval model: may import anything
ALLOWED = {  # layer -> the layers its modules may import
    "base": {"base"},
    "models": {"base", "models"},
    "cores": {"base", "models", "cores"},
    "compiler": {"base", "models", "cores", "compiler"},
    "runtime": {"base", "models", "cores", "runtime"},
    "top": {"base", "models", "cores", "compiler", "runtime", "top"},
}


def modules() -> dict:
    """module name -> source path, for every module that installs as sdllm.*."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def layer(module: str) -> str:
    if module == "sdllm" or module.startswith(TOP):
        return "top"
    for name in ("models", "cores", "compiler", "runtime"):
        if module == f"sdllm.{name}" or module.startswith(f"sdllm.{name}."):
            return name
    return "base"


def imports(path: pathlib.Path, known: set) -> set:
    """Every sdllm module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "sdllm"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sdllm":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def test_every_import_follows_the_layers():
    mods = modules()
    assert {"sdllm.stages", "sdllm.formats.model", "sdllm.models.integer.units", "sdllm.compiler.tile", "sdllm.runtime.fast",
            "sdllm.cli.run"} <= set(mods)
    against = []
    for module, path in mods.items():
        for target in imports(path, set(mods)):
            if layer(target) not in ALLOWED[layer(module)]:
                against.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not against, "\n".join(against)


MODEL_JOBS = ("integer", "source", "conversion", "evaluation")  # each may import only itself and those before it


def test_the_models_subpackages_follow_their_order():
    mods = modules()
    against = []
    for module, path in mods.items():
        if not module.startswith("sdllm.models."):
            continue
        job = module.split(".")[2]
        for target in imports(path, set(mods)):
            if target.startswith("sdllm.models.") and target.split(".")[2] in MODEL_JOBS and job in MODEL_JOBS \
                    and MODEL_JOBS.index(target.split(".")[2]) > MODEL_JOBS.index(job):
                against.append(f"{module} imports {target}")
    assert not against, "\n".join(against)
    integer = [m for m in mods if m.startswith("sdllm.models.integer")]
    torch_users = sorted(m for m in integer if re.search(r"^\s*(import|from) torch", mods[m].read_text(), re.M))
    assert torch_users == ["sdllm.models.integer.products"]  # torch as a GEMM library only, never its float model


def test_no_module_imports_itself_back():
    """The import graph (imports inside functions included) has no cycle: none is dodged by
    importing inside a function. The package `sdllm` exposes the API lazily (PEP 562): not an edge."""
    import networkx as nx

    mods = modules()
    graph = nx.DiGraph()
    for module, path in mods.items():
        for target in imports(path, set(mods)):
            if target != module and module != "sdllm" and target in mods:
                graph.add_edge(module, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "\n".join(" -> ".join(c + c[:1]) for c in cycles[:10])


def test_the_layer_check_catches_an_edge_against_the_direction(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from sdllm.compiler.route import route\n")
    assert imports(bad, set(modules())) == {"sdllm.compiler.route"}
    assert layer("sdllm.compiler.route") not in ALLOWED[layer("sdllm.runtime.fast")]
    assert layer("sdllm.models.integer.units") not in ALLOWED[layer("sdllm.formats.build")]


def test_stage_names_are_spelled_only_in_the_stage_table():
    spelled = {}
    for module, path in modules().items():
        text = path.read_text()
        for name in ("gate_up", "qkv", '"qk"', '"pv"', "'qk'", "'pv'"):
            if re.search(re.escape(name), text):
                spelled.setdefault(name, []).append(module)
    assert spelled == {"gate_up": ["sdllm.stages"], "qkv": ["sdllm.stages"], '"qk"': ["sdllm.stages"], '"pv"': ["sdllm.stages"]}


# Core-type and node-kind names as builds spell them, and the unit nodes' name form: spelled in the
# stage table only (`CoreType`, `NodeKind`, `HOST_NODE`, `unit_node`); everywhere else they are named
# through it. Known exceptions, each a (module, literal):
FIELD_NAMES = {("sdllm.schedule", "host"), ("sdllm.formats.build", "host"),  # the schedule's host phases, a field
               ("sdllm.runtime.run_report", "unit"), ("sdllm.runtime.run_page", "unit")}  # run.json's raster: its unit
PENDING = set()  # literals in modules being rewritten on another branch; to go there, never to grow


def name_literals(path: pathlib.Path) -> set:
    """String literals of a module that spell a core type, a node kind or a unit node's name."""
    from sdllm.stages import CoreType, NodeKind

    names = {t.value for t in CoreType} | {k.value for k in NodeKind}
    unit = "." + NodeKind.UNIT.value
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in names:
                out.add(node.value)
            elif node.value.endswith(unit):
                out.add(unit)
    return out


def test_core_type_and_node_names_are_spelled_only_in_the_stage_table():
    found = {(module, literal) for module, path in modules().items() if module != "sdllm.stages"
             for literal in name_literals(path)}
    assert found - FIELD_NAMES - PENDING == set(), sorted(found - FIELD_NAMES - PENDING)


def test_the_name_check_catches_a_literal(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(c, i):\n    return c.type == "neuron_unit" or c.node == f"L{i}.unit" or c.node == "host"\n')
    assert name_literals(bad) == {"neuron_unit", ".unit", "host"}
