"""The documents the repository holds are the ones it cites: every reference to the design names
docs/DESIGN.md and one of its sections, and nothing points outside the repository."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "DESIGN.md"


def tracked_text() -> dict:
    """path -> text of every tracked text file (and untracked ones git does not ignore)."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    out = {}
    for name in names:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".yaml", ".toml", ".sh", ".txt", "") and path.is_file():
            try:
                out[name] = path.read_text()
            except UnicodeDecodeError:
                continue
    return out


def test_design_references_name_a_section_of_docs_design():
    sections = set(re.findall(r"^## (\d+)\.", DESIGN.read_text(), re.M))
    assert sections == {str(n) for n in range(1, 10)}
    cited = []
    for name, text in tracked_text().items():
        cited += [(name, n) for n in re.findall(r"DESIGN(?:\.md)? §(\d+)", text)]
    assert cited and all(n in sections for _, n in cited), [c for c in cited if c[1] not in sections]


def test_no_reference_leaves_the_repository():
    outside = [name for name, text in tracked_text().items()
               if name != "tests/test_docs.py" and re.search(r"\.\./shared|shared/DESIGN|design card", text, re.I)]
    assert not outside


def test_the_pages_name_no_path_of_the_machine_they_were_made_on():
    """Results pages are written by benchmarks run with caches anywhere: no /work, /tmp or home path lands."""
    pages = {name: text for name, text in tracked_text().items() if name.endswith(".md")}
    leaked = [(name, m) for name, text in pages.items() for m in re.findall(r"(?<![\w.])/(?:work|tmp|root|home)/\S+", text)]
    assert not leaked, leaked


TOP = ("sdllm", "models", "cores", "compiler", "runtime", "benchmarks", "tests", "scripts", "docs", "hw_configs")


def cited_paths(text: str) -> set:
    """Backticked files of the repository a page cites: `compiler/tile.py`, `scripts/fetch_smollm2.sh`,
    `DESIGN.md` (a path in another package, `lava/magma/...`, or in the output folder is not one)."""
    paths = re.findall(r"`([\w./-]+\.(?:py|sh|md|yaml))`", text)
    return {p for p in paths if "/" not in p or p.split("/")[0] in TOP}


def test_every_file_the_pages_cite_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # CHANGELOG.md names files that have gone
    files = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts}
    names = {pathlib.Path(f).name for f in files}
    missing = []
    for page in pages:
        text = page.read_text()
        for path in sorted(cited_paths(text)):
            if not (path in files or (page.parent / path).exists() or ("/" not in path and path in names)):
                missing.append(f"{page.name}: {path}")
        for link in re.findall(r"\]\(([^)#:]+)\)", text):  # relative markdown links
            if not (page.parent / link).exists():
                missing.append(f"{page.name}: link {link}")
    assert not missing, "\n".join(missing)


def test_the_path_check_catches_a_missing_file():
    assert cited_paths("see `runtime/behaviours.py` and `cores/synapse.py`, not `x.png` or `out/x.py`") == {
        "runtime/behaviours.py", "cores/synapse.py"}
    assert not (ROOT / "runtime" / "behaviours.py").exists() and (ROOT / "cores" / "synapse.py").exists()
