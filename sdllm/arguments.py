"""Arguments at the library's doors (the Python API, the Lava Process, the sampler every backend
shares): a wrong type or a value out of range is one `SdllmError` line naming the argument, what
it takes and what it got — the same line whichever door or backend it came through, and before
any work. The commands pass their flags through the same checks (names as "--flag")."""

import math
import os

import numpy as np

from sdllm.errors import SdllmError
from sdllm.formats.fields import shown


def got(value) -> str:
    """A value as an error line shows it: integers as numbers, anything else by its repr (a float
    as a float: 65.0, not 65), cut."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return shown(value)
    if isinstance(value, np.floating):
        value = float(value)
    return shown(repr(value))


def fail(name: str, expected: str, value):
    raise SdllmError(f"{name}: {expected}, got {got(value)}")


def _bounds(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in {lo:,}..{hi:,}"
    return f" >= {lo:,}" if lo is not None else f" <= {hi:,}" if hi is not None else ""


def integer(name: str, value, lo: int | None = None, hi: int | None = None, expected: str | None = None) -> int:
    """An integer (not a bool, not a float that happens to be whole) within lo..hi."""
    expected = expected or f"an integer{_bounds(lo, hi)}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(name, expected, value)
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(name, expected, value)
    return value


def number(name: str, value, lo: float | None = None, hi: float | None = None, expected: str | None = None,
           lo_open: bool = False) -> float:
    """A finite real number (an int or a float, not a bool) within lo..hi (lo excluded if lo_open)."""
    expected = expected or f"a finite number{_bounds(lo, hi)}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        fail(name, expected, value)
    v = float(value)
    if not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        fail(name, expected, value)
    return v


def boolean(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", value)
    return bool(value)


def text(name: str, value, choices=None) -> str:
    """A string (one of choices, if given)."""
    expected = "a string" if choices is None else f"one of {', '.join(choices)}"
    if not isinstance(value, str) or (choices is not None and value not in choices):
        fail(name, expected, value)
    return value


def path(name: str, value) -> str:
    """A file-system path: a non-empty str or os.PathLike without NUL characters."""
    try:
        p = os.fspath(value)
    except TypeError:
        fail(name, "a path (a string or os.PathLike)", value)
    if not isinstance(p, str) or not p or "\0" in p:
        fail(name, "a path (a non-empty string without NUL characters)", value)
    return p


def paths(name: str, value) -> tuple:
    """One path, or a list or tuple of them."""
    if isinstance(value, (str, os.PathLike)):
        return (path(name, value),)
    if not isinstance(value, (list, tuple)):
        fail(name, "a path or a list of paths", value)
    return tuple(path(f"{name}[{i}]", v) for i, v in enumerate(value))


def callback(name: str, value):
    """A callable, or None."""
    if value is not None and not callable(value):
        fail(name, "a callable or None", value)
    return value
