"""Reading a document field by field: every missing field, wrong type, shape, dtype, range or
non-finite value becomes one `FormatError` line that names the file, the field, what was
expected and what was found."""

from __future__ import annotations

import math

import numpy as np
import yaml

from sdllm.errors import SdllmError

MISSING = object()


class FormatError(SdllmError):
    def __init__(self, where: str, field: str, expected: str, found):
        super().__init__(f"{where}: {field}: expected {expected}, found {shown(found)}")


def shown(value) -> str:
    """A found value as the message shows it: numbers as numbers, a description (a str) as it is;
    a user's own string is passed in repr'd by the caller."""
    if value is MISSING:
        return "nothing (the field is missing)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype} {list(value.shape)}>"
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # a torch tensor
        return f"<tensor {str(value.dtype).replace('torch.', '')} {list(value.shape)}>"
    return f"<{type(value).__name__}>"


class Doc:
    """A mapping (or list) read field by field; `path` names where it sits in its file."""

    def __init__(self, value, where: str, path: str = ""):
        self.value, self.where, self.path = value, where, path

    def _name(self, key) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else str(key)

    def fail(self, key, expected: str, found):
        raise FormatError(self.where, self._name(key) if key is not None else self.path or "document", expected, found)

    def has(self, key) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def raw(self, key):
        if not isinstance(self.value, dict):
            self.fail(None, "a mapping", _kind(self.value))
        value = self.value.get(key, MISSING)
        if value is MISSING:
            self.fail(key, "a value", MISSING)
        return value

    def doc(self, key) -> Doc:
        value = self.raw(key)
        if not isinstance(value, dict):
            self.fail(key, "a mapping", _kind(value))
        return Doc(value, self.where, self._name(key))

    def items(self, key, length: int | None = None, max_length: int = 1 << 20) -> list:
        """A list field as Docs (each item may be read further)."""
        value = self.raw(key)
        if not isinstance(value, list):
            self.fail(key, "a list", _kind(value))
        if length is not None and len(value) != length:
            self.fail(key, f"a list of {length}", f"a list of {len(value)}")
        if len(value) > max_length:
            self.fail(key, f"a list of at most {max_length:,}", f"a list of {len(value):,}")
        return [Doc(v, self.where, f"{self._name(key)}[{i}]") for i, v in enumerate(value)]

    def ints(self, key, length: int, lo: int, hi: int) -> list:
        """A list of `length` integers within lo..hi."""
        values = [item.value for item in self.items(key, length=length)]
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi for v in values):
            self.fail(key, f"{length} integers in {lo:,}..{hi:,}", values)
        return [int(v) for v in values]

    def int(self, key, lo: int, hi: int) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            self.fail(key, f"an integer in {lo:,}..{hi:,}", _kind(value) if not isinstance(value, float) else value)
        if not lo <= int(value) <= hi:
            self.fail(key, f"an integer in {lo:,}..{hi:,}", int(value))
        return int(value)

    def float(self, key, lo: float, hi: float, lo_open: bool = False) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            self.fail(key, "a finite number", _kind(value))
        v = float(value)
        ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi
        if not ok:
            self.fail(key, f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]", v)
        return v

    def bool(self, key) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            self.fail(key, "true or false", repr(value)[:80] if isinstance(value, (int, float, str)) else _kind(value))
        return value

    def str(self, key, choices=None, max_length: int = 1 << 12) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            self.fail(key, "a string" if choices is None else f"one of {', '.join(choices)}", _kind(value))
        if choices is not None and value not in choices:
            self.fail(key, f"one of {', '.join(choices)}", repr(value[:80]))
        if len(value) > max_length:
            self.fail(key, f"a string of at most {max_length:,} characters", f"{len(value):,} characters")
        return value

    def array(self, key, shape: tuple, kinds: str = "i", lo: int | None = None, hi: int | None = None,
              dtypes: tuple = ()) -> np.ndarray:
        """A numpy array or torch tensor of the given shape (None: any size on that axis), integer
        (kinds 'i') or float ('f', finite), values within lo..hi; returned as it is."""
        value = self.raw(key)
        return check_array(value, self.where, self._name(key), shape, kinds, lo, hi, dtypes)


def check_array(value, where: str, name: str, shape: tuple, kinds: str = "i", lo=None, hi=None, dtypes: tuple = ()):
    a = value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value
    if not isinstance(a, np.ndarray):
        raise FormatError(where, name, f"an array of shape {_shape(shape)}", _kind(value))
    kind_ok = a.dtype.kind in ("iu" if kinds == "i" else "f")
    if not kind_ok or (dtypes and str(a.dtype) not in dtypes):
        want = " or ".join(dtypes) if dtypes else ("an integer" if kinds == "i" else "a float") + " dtype"
        raise FormatError(where, name, want, str(a.dtype))
    if len(a.shape) != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        raise FormatError(where, name, f"shape {_shape(shape)}", list(a.shape))
    if a.size:
        if kinds == "f" and not np.isfinite(a).all():
            raise FormatError(where, name, "finite values", "NaN or inf")
        if lo is not None and a.min() < lo:
            raise FormatError(where, name, f"values >= {lo:,}", a.min().item())
        if hi is not None and a.max() > hi:
            raise FormatError(where, name, f"values <= {hi:,}", a.max().item())
    return value


def _shape(shape: tuple) -> str:
    return "(" + ", ".join("any" if s is None else f"{s:,}" for s in shape) + ("," if len(shape) == 1 else "") + ")"


MAX_YAML_DEPTH = 32


class _Plain(yaml.SafeLoader):
    """safe_load without aliases and without deep nesting: no sdllm document has a use for
    either, and nested aliases ("billion laughs") expand without bound while deep nesting ends
    the recursive composer in a RecursionError."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not accepted")
        if self.depth >= MAX_YAML_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise yaml.YAMLError(f"line {line}: nested deeper than {MAX_YAML_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(stream):
    """yaml.safe_load, with aliases and deep nesting refused (a yaml.YAMLError)."""
    return yaml.load(stream, Loader=_Plain)  # noqa: S506 — a SafeLoader
