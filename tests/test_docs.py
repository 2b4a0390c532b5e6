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
