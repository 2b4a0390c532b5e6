"""docs/RESULTS.md, written by the benchmarks: each replaces its own section — `## NAME`, NAME the
benchmark's file name without `.py` — with the figures it printed, stamped with the date, the
command and the machine (platform, CPU model and count). Every other section stays byte for
byte. The page is rewritten atomically (a temporary file beside it, renamed into place) under a
lock on its folder, so two benchmarks ending at once both land.

    write_section("compile_scale", table)         # a benchmark that formats its own markdown
    with recorded("executor_speed"): ...           # one that prints: what it printed, as a text block
"""

import contextlib
import datetime
import io
import os
import pathlib
import platform
import sys

from sdllm.outputs import locked, write_file

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "RESULTS.md"
TITLE = "# Results\n\nFigures measured by the scripts in `benchmarks/`; each writes its own section when it ends.\n\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs"


def _portable(arg: str) -> str:
    """A command-line argument as the page shows it: a path outside the repository is the reader's
    own (PATH), never this machine's."""
    if os.path.isabs(arg) and not pathlib.Path(arg).resolve().is_relative_to(RESULTS.parent.parent):
        return "PATH"
    return arg


def _sections(text: str) -> list:
    """[(heading name or None for the text before the first heading, the text up to the next heading)];
    a '## ' line inside a fenced block is not a heading."""
    out, fenced = [[None, ""]], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            out.append([line[3:].strip(), ""])
        out[-1][1] += line
    return out


def write_section(name: str, body: str, path=RESULTS, when: datetime.date | None = None) -> str:
    """Replace the section `## name` of the results page (appended when it has none) with `body`
    (markdown), stamped; returns the section as written."""
    when = when or datetime.date.today()
    script = f"benchmarks/{name}.py"
    args = [_portable(a) for a in sys.argv[1:]]
    command = " ".join([script, *args]) if os.path.basename(sys.argv[0]) == f"{name}.py" else script
    section = (f"## {name}\n\n_Written by `{command}` on {when.isoformat()}; {machine()}._\n\n"
               f"{body.strip()}\n\n")
    path = pathlib.Path(path)
    with locked(str(path.parent)):
        text = path.read_text() if path.exists() else TITLE
        parts = _sections(text)
        if any(n == name for n, _ in parts):
            parts = [[n, section if n == name else t] for n, t in parts]
        else:
            parts.append([name, ("\n" if text and not text.endswith("\n") else "") + section])
        write_file("".join(t for _, t in parts).encode(), str(path))
    return section


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self):
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def recorded(name: str):
    """Print as usual; when the block ends without an error, what it printed is the section `name`."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
        yield
    write_section(name, "```text\n" + printed.getvalue().strip("\n") + "\n```")
