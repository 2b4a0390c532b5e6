"""The build directory (docs/DESIGN.md §5): defined, written and read (with validation) here and nowhere else.

    build/
      network.json   format "sdllm-build", format_version 5: the model's config and quant spec
                     (bits, spike code and dead zone of every point),
                     the tokenizer, the merged hw config, the schedule, the operator graph's nodes
                     (kind, layer, named input and output segments) and edges, and per core: id,
                     name, type, node, layer, chip, mesh position(s) and span, sizes, scalar
                     parameters, array paths (or index ranges inline as [start, stop]) and its
                     routing table's path
      arrays/*.npy   synapse tables (sparse: axon_ptr, neuron_index, weight; dense: weight_dense,
                     or weight_nibbles for weights of up to 4 bits), unit and host parameters,
                     routing tables (rows: destination core, source output start, destination
                     axon start, length), each in the narrowest integer type that holds it
      report.txt, report.json, report.html   the core-mapping report

`BuildWriter` writes one atomically (JSON with sorted keys: the same network gives the same
bytes); `read` validates everything the runtime will rely on — every field's type and range,
array shapes, route targets and axon ranges, paths confined to arrays/ — so that a damaged or
hostile build is one line naming the field, never a traceback. The runtime reads only this.
"""

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sdllm import codes, interrupts, nibbles, outputs, resources, stages
from sdllm.errors import SdllmError
from sdllm.formats import hw as hwformat
from sdllm.formats.fields import Doc, FormatError, check_array
from sdllm.formats.model import FORMAT_VERSION as MODEL_VERSION
from sdllm.formats.model import LlamaConfig, QuantSpec, qmax, read_config, read_quant, read_tokenizer
from sdllm.schedule import HostPhases, LayerPhases, Schedule, Window, widest_span

FORMAT = "sdllm-build"
FORMAT_VERSION = 5
INT_TYPES = (np.int8, np.int16, np.int32, np.int64)
MAX_JSON_BYTES = 1 << 30
MAX_ARRAY_BYTES = 1 << 31
MAX_SIZE = 1 << 26  # axons, neurons, routes of one core; positions per token
ARRAY_PATH = re.compile(r"arrays/[A-Za-z0-9_.\[\]-]+\.npy")
CORE_TYPES = tuple(t.value for t in stages.CoreType)
NODE_KINDS = tuple(k.value for k in stages.NodeKind)


def narrow(array) -> np.ndarray:
    """An integer array in the narrowest type that holds its values."""
    a = np.asarray(array)
    if a.size == 0:
        return a.astype(np.int8)
    lo, hi = int(a.min()), int(a.max())
    dtype = next(t for t in INT_TYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    return np.ascontiguousarray(a, dtype=dtype)


def runs(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(k, 3) run-length routes of sorted (src, dst) pairs: start of src, start of dst, length."""
    if not len(src):
        return np.zeros((0, 3), np.int64)
    brk = np.nonzero((np.diff(src) != 1) | (np.diff(dst) != 1))[0] + 1
    starts = np.concatenate([[0], brk])
    lengths = np.diff(np.concatenate([starts, [len(src)]]))
    return np.stack([src[starts], dst[starts], lengths], 1).astype(np.int64)


def expand(table: np.ndarray):
    """(src index array, dst axon array) of a (k, 3) run table."""
    n = table[:, 2]
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return np.repeat(table[:, 0], n) + offs, np.repeat(table[:, 1], n) + offs


# writing ----------------------------------------------------------------------------------------

class BuildWriter:
    """Writes a build into a temporary sibling directory (NAME.tmp-PID-...) and, on success, swaps
    it into place in one atomic step (`sdllm.outputs.swap_in`), then removes the previous build.
    On any failure or signal the temporary directory is removed and the target left as it was.
    A target that holds files a build does not consist of is refused, never deleted; a symlinked
    target is replaced where the link points.

        with BuildWriter(out_dir) as w:
            rel = w.array("c00001.routes", table)     # arrays/c00001.routes.npy
            w.json("network.json", doc)
    """

    def __init__(self, out_dir: str, expected_bytes: int = 0):
        self.out_dir = check_target(out_dir)
        self.parent = os.path.dirname(self.out_dir)
        resources.require_disk(expected_bytes, self.parent, f"-o {out_dir}")
        self.tmp = f"{self.out_dir}.tmp-{os.getpid()}-{secrets.token_hex(3)}"

    def __enter__(self) -> "BuildWriter":
        self.watch = outputs.removed_if_this_process_dies(self.tmp)
        self.watch.__enter__()
        try:
            os.mkdir(self.tmp)
            os.mkdir(os.path.join(self.tmp, "arrays"))
        except OSError as e:
            self._remove_tmp()
            raise SdllmError(f"-o {self.out_dir}: cannot write ({e.strerror})") from None
        except BaseException:
            self._remove_tmp()
            raise
        return self

    def array(self, name: str, array) -> str:
        rel = f"arrays/{name}.npy"
        np.save(os.path.join(self.tmp, rel), narrow(array))
        return rel

    def json(self, name: str, doc: dict) -> None:
        with open(os.path.join(self.tmp, name), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)

    def text(self, name: str, text: str) -> None:
        with open(os.path.join(self.tmp, name), "w") as f:
            f.write(text)

    def __exit__(self, exc_type, *_):
        try:
            if exc_type is None:
                with interrupts.deferred(), outputs.locked(self.parent):
                    check_target(self.out_dir)  # again: another process may have written there meanwhile
                    try:
                        previous = outputs.swap_in(self.tmp, self.out_dir)
                    except OSError as e:
                        raise SdllmError(f"-o {self.out_dir}: cannot replace it ({e.strerror})") from None
                    if previous is not None:
                        shutil.rmtree(previous, ignore_errors=True)
        finally:
            self._remove_tmp()
        return False

    def _remove_tmp(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.watch.__exit__(None, None, None)


BUILD_FILES = ("network.json", "report.txt", "report.json", "report.html")
OWN_ARRAY = re.compile(r"c\d{5,}\.[A-Za-z0-9_]+\.npy")


def foreign_files(path: str) -> list:
    """What in an existing directory is not part of a build as `emit` writes it: names a build
    does not have, links, folders. sdllm deletes none of these."""
    out = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name == "arrays" and os.path.isdir(full) and not os.path.islink(full):
            out += [f"arrays/{n}" for n in sorted(os.listdir(full)) if not (OWN_ARRAY.fullmatch(n) and _plain_file(os.path.join(full, n)))]
        elif name not in BUILD_FILES or not _plain_file(full):
            out.append(name)
    return out


def _plain_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)


def check_target(out_dir: str) -> str:
    """The real path a build is to be written to (a symlink resolved), after checking that its
    directory takes new files and that whatever is there is a build sdllm may replace."""
    path = os.path.realpath(out_dir)
    outputs.check_directory(path, "-o")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise SdllmError(f"-o {out_dir}: exists and is not a directory; refusing to replace it")
        try:
            foreign = foreign_files(path)
        except OSError as e:
            raise SdllmError(f"-o {out_dir}: cannot read it ({e.strerror}); refusing to replace it") from None
        if foreign and not os.path.isfile(os.path.join(path, "network.json")):
            raise SdllmError(f"-o {out_dir}: exists and is not an sdllm build directory; refusing to replace it")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise SdllmError(f"-o {out_dir}: holds files a build does not ({shown}); refusing to replace it "
                             "(move them, or choose another directory)")
    return path


# reading ----------------------------------------------------------------------------------------

@dataclass
class CoreImage:
    id: int
    name: str
    type: str
    node: str
    layer: int
    chip: int
    n_axons: int
    n_neurons: int
    params: dict  # scalars and arrays together
    routes: list  # [(dest id, src index array, dest axon array)]
    position: tuple = (-1, -1)  # on the chip's mesh
    span: int = 1  # physical cores

    def weights(self) -> np.ndarray:
        """A synapse core's (neurons, axons) weights, from either encoding of its table."""
        p = self.params
        if "weight_dense" in p:
            return p["weight_dense"].reshape(self.n_neurons, self.n_axons)
        w = np.zeros((self.n_neurons, self.n_axons), np.int64)
        w[p["neuron_index"], np.repeat(np.arange(self.n_axons), np.diff(p["axon_ptr"]))] = p["weight"]
        return w


@dataclass
class Build:
    path: str
    doc: dict
    cores: list
    config: LlamaConfig
    quant: QuantSpec
    hw: hwformat.HwConfig
    schedule: Schedule

    @property
    def tokenizer(self) -> dict:
        return self.doc["tokenizer"]

    def segments(self, node: str, side: str) -> dict:
        """name -> (start, stop) of a node's 'inputs' or 'outputs'."""
        out, off = {}, 0
        for name, n in self.doc["nodes"][node][side]:
            out[name] = (off, off + n)
            off += n
        return out

    @cached_property
    def host(self) -> CoreImage:
        return next(c for c in self.cores if c.type == stages.CoreType.HOST)

    def link(self, src: int, dst: int) -> tuple:
        """(NoC hops, chip crossings) of a route in the system-wide mesh; (0, 0) to or from the off-chip host."""
        a, b = self.cores[src], self.cores[dst]
        if a.chip < 0 or b.chip < 0:
            return 0, 0
        hops, crossings = self.hw.links([a.chip], [a.position], [b.chip], [b.position])
        return int(hops[0]), int(crossings[0])


def read(path: str) -> Build:
    """Read and validate a build directory; any violation is one SdllmError line."""
    doc_path = os.path.join(path, "network.json")
    if not os.path.isfile(doc_path):
        raise SdllmError(f"{path}: not a build directory (no network.json); run sdllm-compile first")
    if os.path.getsize(doc_path) > MAX_JSON_BYTES:
        raise SdllmError(f"{doc_path}: {os.path.getsize(doc_path):,} bytes; a network.json of at most {MAX_JSON_BYTES:,} is read")
    try:
        with open(doc_path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SdllmError(f"{doc_path}: unreadable ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise SdllmError(f"{doc_path}: unreadable (nested deeper than JSON decoding allows)") from None
    except OSError as e:
        raise SdllmError(f"{doc_path}: unreadable ({e.strerror})") from None
    return _Reader(path, doc_path, doc).build()


class _Reader:
    def __init__(self, path: str, doc_path: str, doc):
        self.path, self.doc_path, self.raw = path, doc_path, doc
        self.d = Doc(doc, doc_path)
        self.loaded, self.memory = 0, resources.available_memory()

    def build(self) -> Build:
        d = self.d
        if not isinstance(self.raw, dict):
            d.fail(None, "a JSON object", type(self.raw).__name__)
        d.str("format", (FORMAT,))
        if d.raw("format_version") != FORMAT_VERSION:
            raise SdllmError(f"{self.path}: build format {self.raw.get('format')!r} version {self.raw.get('format_version')!r} "
                             f"is not supported (this sdllm reads {FORMAT} version {FORMAT_VERSION})")
        model = d.doc("model")
        cfg, quant = read_config(model.doc("config")), read_quant(model.doc("quant"), MODEL_VERSION)
        try:
            quant.check_model(cfg)
        except SdllmError as e:
            raise SdllmError(f"{self.doc_path}: model.quant: {e}") from None
        model.bool("synthetic")
        read_tokenizer(d.doc("tokenizer"))
        hw = hwformat.from_raw(d.raw("hw"), f"{self.doc_path}: hw")
        self.cfg, self.quant, self.hw = cfg, quant, hw
        schedule = self._schedule(d.doc("schedule"))
        self._nodes(d.doc("nodes"))
        self._edges(d.items("edges"))
        cores, tables = zip(*[self._core(c, i) for i, c in enumerate(d.items("cores", max_length=MAX_SIZE))])
        cores = list(cores)
        self._routes(cores, tables)
        types = [c.type for c in cores]
        if types.count(stages.CoreType.HOST) != 1:
            d.fail("cores", "exactly one host_io core", f"{types.count(stages.CoreType.HOST)}")
        if types.count(stages.CoreType.NEURON_UNIT) != cfg.n_layers:
            d.fail("cores", f"{cfg.n_layers} neuron_unit cores (one per layer)", types.count(stages.CoreType.NEURON_UNIT))
        return Build(self.path, self.raw, cores, cfg, quant, hw, schedule)

    def _schedule(self, s: Doc) -> Schedule:
        period = s.int("period", 1, 1 << 24)
        s.int("timesteps_per_spike_train", 1, period)
        phase = lambda doc, key: doc.int(key, 0, period - 1)  # noqa: E731
        layers = []
        for layer in s.items("layers", length=self.cfg.n_layers):
            values = layer.ints("emit", len(stages.LAYER) + 1, 0, period - 1)
            if values != sorted(values):
                layer.fail("emit", "non-decreasing phases", values)
            layers.append(LayerPhases(phase(layer, "resid_in"), tuple(values)))
        st = s.doc("stages")
        windows = {}
        layer_stages = [(stg, i) for i in range(self.cfg.n_layers) for stg in stages.LAYER]
        for stg, i in layer_stages + [(stages.HEAD, None)]:
            w = st.doc(stg.node(i))
            code = w.str("code", self.hw.core.spike_codes)
            window = codes.steps(code, self.quant.of_stage(stg.node(i)).bits)
            first, last = phase(w, "first"), phase(w, "last")
            if last - first + 1 != window:
                w.fail("last", f"first + {window - 1} (a {window}-step window for {stg.input.name}'s train)", w.value["last"])
            windows[stg.node(i)] = Window(first, last, code)
        reduced = [item.value for item in s.items("reduced")]
        if any(name not in windows for name in reduced) or len(set(reduced)) != len(reduced):
            s.fail("reduced", "distinct stage names", reduced)
        host = s.doc("host")
        embed_at, ratio_at = phase(host, "embed_arrives"), phase(host, "ratio_arrives")
        if host.int("logits_arrive", 0, period - 1) != period - 1:
            host.fail("logits_arrive", f"the last phase {period - 1}", host.value["logits_arrive"])
        interval = s.int("interval", 1, period)
        if interval < widest_span(tuple(layers), windows[stages.HEAD.name]):
            s.fail("interval", f"at least {widest_span(tuple(layers), windows[stages.HEAD.name])} (the widest span a core "
                               "acts in: positions would overlap in it)", interval)
        return Schedule(period, tuple(layers), windows, tuple(reduced), HostPhases(embed_at, ratio_at, period - 1), interval)

    def _nodes(self, nodes: Doc) -> None:
        self.nodes = {}
        for name in nodes.value:
            n = nodes.doc(name)
            n.str("kind", NODE_KINDS)
            n.int("layer", -1, self.cfg.n_layers)
            self.nodes[name] = {side: self._segments(n, side) for side in ("inputs", "outputs")}

    def _segments(self, n: Doc, side: str) -> dict:
        out, off = {}, 0
        for seg in n.items(side, max_length=64):
            if not (isinstance(seg.value, list) and len(seg.value) == 2 and isinstance(seg.value[0], str)
                    and isinstance(seg.value[1], int) and not isinstance(seg.value[1], bool) and 0 <= seg.value[1] <= MAX_SIZE):
                seg.fail(None, f"[segment name, size in 0..{MAX_SIZE:,}]", seg.value)
            out[seg.value[0]] = (off, off + seg.value[1])
            off += seg.value[1]
        return out

    def _edges(self, edges: list) -> None:
        for e in edges:
            v = e.value
            ok = (isinstance(v, list) and len(v) == 5 and all(isinstance(x, str) for x in v[:4])
                  and v[0] in self.nodes and v[1] in self.nodes)
            if ok:
                src, dst = self.nodes[v[0]]["outputs"].get(v[2]), self.nodes[v[1]]["inputs"].get(v[3])
                ok = src is not None and dst is not None and src[1] - src[0] == dst[1] - dst[0] == v[4]
            if not ok:
                e.fail(None, "[source node, destination node, output segment, input segment, size] of existing, "
                       "equal-sized segments", v)

    def _array(self, c: Doc, key: str, value):
        """A core's array: a [start, stop] range inline, or an .npy file inside arrays/; counted
        against the memory the build may take once read."""
        where = f"{c.path}.arrays.{key}"
        if isinstance(value, list):
            if not (len(value) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
                    and 0 <= value[0] <= value[1] <= MAX_SIZE):
                raise FormatError(self.doc_path, where, f"[start, stop] within 0..{MAX_SIZE:,}", value)
            self._count(value[1] - value[0], where)
            return np.arange(*value, dtype=np.int64)
        if not isinstance(value, str) or not ARRAY_PATH.fullmatch(value) or ".." in value:
            raise FormatError(self.doc_path, where, "a file arrays/NAME.npy inside the build", repr(value)[:80])
        full = os.path.join(self.path, value)
        if not os.path.isfile(full) or os.path.realpath(full) != os.path.join(os.path.realpath(self.path), value):
            raise FormatError(self.doc_path, where, "an existing file inside the build (not a link)", repr(value))
        if os.path.getsize(full) > MAX_ARRAY_BYTES:
            raise FormatError(self.doc_path, where, f"at most {MAX_ARRAY_BYTES:,} bytes", f"{os.path.getsize(full):,}")
        try:  # mapped, not read: the header's shape is checked against the file's size before any allocation
            a = np.load(full, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise FormatError(self.doc_path, where, "a readable .npy array", f"{type(e).__name__}: {' '.join(str(e).split())}") from None
        if a.dtype.kind != "i":  # emit writes signed types only; unsigned 64-bit values would wrap
            raise FormatError(self.doc_path, where, "signed integers", str(a.dtype))
        self._count(a.size, where)
        return np.array(a, dtype=np.int64)

    def _count(self, n: int, where: str) -> None:
        self.loaded += n * resources.INT_BYTES
        if self.loaded > self.memory:
            raise FormatError(self.doc_path, where, f"a build that fits the {self.memory:,} bytes of memory available",
                              f"{self.loaded:,} bytes of arrays so far")

    def _core(self, c: Doc, index: int) -> CoreImage:
        cfg, hw = self.cfg, self.hw
        if c.int("id", 0, MAX_SIZE) != index:
            c.fail("id", f"{index} (its position in the list)", c.value["id"])
        ctype = c.str("type", CORE_TYPES)
        node = c.str("node", tuple(self.nodes))
        host = ctype == stages.CoreType.HOST
        chip = c.int("chip", -1 if host else 0, -1 if host else hw.chips - 1)
        position = tuple(c.ints("position", 2, -1, max(hw.mesh) - 1))
        span = c.int("span", 0 if host else 1, hw.cores_per_chip)
        if not host and not (0 <= position[0] < hw.mesh[0] and 0 <= position[1] < hw.mesh[1]):
            c.fail("position", f"a position on the {hw.mesh[0]} x {hw.mesh[1]} mesh", list(position))
        n_axons, n_neurons = c.int("n_axons", 0, MAX_SIZE), c.int("n_neurons", 0, MAX_SIZE)
        layer = c.int("layer", -1, cfg.n_layers)
        params = {}
        scalars = c.doc("params")
        for key, value in scalars.value.items():
            if not (isinstance(value, (int, str)) and not isinstance(value, bool)):
                scalars.fail(key, "an integer or a string", value)
            params[key] = value
        arrays = c.doc("arrays")
        for key, value in arrays.value.items():
            params[key] = self._array(c, key, value)
        name = f"{c.path} ({c.value.get('name')!r})"
        need = lambda key: params[key] if key in params else c.fail(f"params.{key}", "a value", "nothing")  # noqa: E731
        ins, outs = self.nodes[node]["inputs"], self.nodes[node]["outputs"]
        n_in = max((b for _, b in ins.values()), default=0)
        n_out = max((b for _, b in outs.values()), default=0)
        if ctype != stages.CoreType.REDUCE:
            check_array(need("axons"), self.doc_path, f"{name}.axons", (n_axons,), lo=0, hi=max(n_in - 1, 0))
        check_array(need("neurons"), self.doc_path, f"{name}.neurons", (n_neurons,), lo=0, hi=max(n_out - 1, 0))
        self._params(c, name, ctype, params, n_axons, n_neurons, layer)
        self._payload(c, ctype, params, n_axons, n_neurons, layer)
        routes = c.raw("routes")
        table = None if routes is None else self._array(c, "routes", routes)
        if table is not None:
            check_array(table, self.doc_path, f"{name}.routes", (None, 4), lo=0, hi=MAX_SIZE)
        return CoreImage(index, c.str("name"), ctype, node, layer, chip, n_axons, n_neurons, params, [], position, span), table

    def _params(self, c: Doc, name: str, ctype: str, p: dict, n_axons: int, n_neurons: int, layer: int) -> None:
        cfg, where = self.cfg, self.doc_path
        T = stages.CoreType
        if ctype == T.SYNAPSE:
            bits = p.get("weight_bits")
            q = qmax(bits) if isinstance(bits, int) and 2 <= bits <= 8 else c.fail("params.weight_bits", "an integer in 2..8", bits)
            if "weight_nibbles" in p:
                check_array(p["weight_nibbles"], where, f"{name}.weight_nibbles", ((n_axons * n_neurons + 1) // 2,), lo=-128, hi=127)
                p["weight_dense"] = nibbles.unpack(p.pop("weight_nibbles"), n_neurons * n_axons)
            elif "weight_dense" in p:
                check_array(p["weight_dense"].reshape(-1), where, f"{name}.weight_dense", (n_axons * n_neurons,), lo=-q, hi=q)
            else:
                ptr = check_array(p.get("axon_ptr"), where, f"{name}.axon_ptr", (n_axons + 1,), lo=0)
                if ptr[0] != 0 or (np.diff(ptr) < 0).any():
                    raise FormatError(where, f"{name}.axon_ptr", "non-decreasing offsets from 0", "decreasing")
                check_array(p.get("neuron_index"), where, f"{name}.neuron_index", (int(ptr[-1]),), lo=0, hi=max(n_neurons - 1, 0))
                check_array(p.get("weight"), where, f"{name}.weight", (int(ptr[-1]),), lo=-q, hi=q)
        elif ctype == T.REDUCE:
            parts = p.get("fan_in_parts")
            if not (isinstance(parts, int) and parts >= 2 and n_axons == parts * n_neurons):
                c.fail("params.fan_in_parts", f"k >= 2 with n_axons = k x n_neurons ({n_neurons})", parts)
        elif ctype in (T.KV_QK, T.KV_PV):
            for key, hi in (("n_heads", cfg.n_heads), ("head_dim", cfg.head_dim), ("max_seq_len", cfg.max_seq_len),
                            ("group", cfg.n_heads), ("kv_head0", cfg.n_kv_heads - 1), ("head0", cfg.n_heads - 1),
                            ("n_spike_axons", n_axons)):
                v = p.get(key)
                if not (isinstance(v, int) and 0 <= v <= hi):
                    c.fail(f"params.{key}", f"an integer in 0..{hi}", v)
            if (p["head_dim"], p["max_seq_len"], p["group"]) != (cfg.head_dim, cfg.max_seq_len, cfg.n_heads // cfg.n_kv_heads):
                c.fail("params", "head_dim, max_seq_len and group of the model's config", (p["head_dim"], p["max_seq_len"], p["group"]))
            per_head = cfg.head_dim if ctype == T.KV_QK else cfg.max_seq_len
            writes = n_axons - p["n_spike_axons"]
            if p["n_spike_axons"] != p["n_heads"] * per_head or writes <= 0 or writes % cfg.head_dim:
                c.fail("n_axons", f"{p['n_heads']} heads' spike axons plus whole kv heads' write axons", n_axons)
            n_kv = writes // cfg.head_dim
            last_head = p["head0"] + p["n_heads"] - 1
            if not (p["head0"] // p["group"] == p["kv_head0"] and last_head // p["group"] == p["kv_head0"] + n_kv - 1
                    and last_head < cfg.n_heads):
                c.fail("params.head0", "query heads whose kv heads are the ones written", p["head0"])
            if n_neurons != p["n_heads"] * (cfg.max_seq_len if ctype == T.KV_QK else cfg.head_dim):
                c.fail("n_neurons", f"{p['n_heads']} heads' outputs", n_neurons)
        elif ctype == T.NEURON_UNIT:
            for key, (shape, lo, hi) in unit_arrays(cfg).items():
                check_array(p.get(key), where, f"{name}.{key}", shape, lo=lo, hi=hi)
            for key, (lo, hi) in (unit_scalars(cfg, self.quant, layer) | self._resid()).items():
                v = p.get(key)
                if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
                    c.fail(f"params.{key}", f"an integer in {lo}..{hi}", v)
            for key in unit_wide_keys(cfg, self.quant, layer) & set(p):
                c.fail(f"params.{key}", "nothing (the model's quant has no wide group there)", p[key])
        elif ctype == T.HOST:
            check_array(p.get("embed"), where, f"{name}.embed", (cfg.vocab_size, cfg.dim), lo=-(1 << 40), hi=1 << 40)
            check_array(p.get(f"scale_{stages.HEAD.name}"), where, f"{name}.scale_{stages.HEAD.name}", (cfg.vocab_size,),
                        lo=0, hi=1 << 40)
            wanted = {f"qmax_{stages.HEAD_IN.name}": self.quant.at(stages.HEAD_IN, None).step_max} | {k: lo for k, (lo, _) in self._resid().items()}
            for key, value in wanted.items():
                if p.get(key) != value:
                    c.fail(f"params.{key}", str(value), p.get(key))

    def _payload(self, c: Doc, ctype: str, p: dict, n_axons: int, n_neurons: int, layer: int) -> None:
        """The largest |graded value| the core sends, as the compiler proved it: within the target's
        payload, and no less than what its own tables and parameters allow (where that is known here:
        a synapse core's weights, a KV core's cache, the residual hand-off, the host's embedding)."""
        T, cfg, quant = stages.CoreType, self.cfg, self.quant
        bound = c.int("payload_bound", 0, self.hw.core.payload_max)
        least = 0
        if ctype == T.SYNAPSE:
            w = CoreImage(0, "", ctype, "", layer, 0, n_axons, n_neurons, p, []).weights()
            stage = stages.stage_of(c.value["node"])
            least = quant.of_stage(c.value["node"]).q_max * int(np.abs(w).sum(1).max(initial=0))
        elif ctype in (T.KV_QK, T.KV_PV):
            stage = stages.stage_of(c.value["node"])
            per_head = cfg.head_dim if ctype == T.KV_QK else cfg.max_seq_len
            least = quant.of_stage(c.value["node"]).q_max * quant.at(stage.cache, layer).q_max * per_head
        elif ctype == T.NEURON_UNIT:
            residual = codes.piece_max(cfg.resid_max, *self._carry()) if layer < cfg.n_layers - 1 else 0
            least = max(qmax(quant.kv_bits), residual)
        elif ctype == T.HOST:
            least = codes.piece_max(min(int(np.abs(p["embed"]).max(initial=0)), cfg.resid_max), *self._carry())
        if bound < least:
            c.fail("payload_bound", f"at least {least:,} (what the core's own tables and parameters send)", bound)

    def _carry(self) -> tuple:
        """(pieces, piece bits) of the residual's graded hand-off on this target."""
        return codes.graded_pieces(self.cfg.resid_bits, self.hw.core.graded_payload_bits)

    def _resid(self) -> dict:
        """The residual hand-off's format, the same in the host and every unit: key -> (lo, hi)."""
        pieces, bits = self._carry()
        return {"resid_max": (self.cfg.resid_max,) * 2, "resid_pieces": (pieces,) * 2, "resid_piece_bits": (bits,) * 2}

    def _routes(self, cores: list, tables: tuple) -> None:
        n_total = 0
        for core, table in zip(cores, tables):
            name = f"cores[{core.id}] ({core.name!r}).routes"
            if table is None or not len(table):
                raise FormatError(self.doc_path, name, "a routing table (every core sends its outputs on)", "none")
            dest, src, dst, length = table.T
            if len(table) and (dest.max() >= len(cores) or length.min() < 1):
                raise FormatError(self.doc_path, name, f"destinations in 0..{len(cores) - 1} and lengths >= 1",
                                  f"destination {int(dest.max())}, length {int(length.min())}")
            if len(table) and (src + length).max() > core.n_neurons:
                raise FormatError(self.doc_path, name, f"source outputs within its {core.n_neurons} neurons",
                                  f"up to {int((src + length).max())}")
            n_total += int(length.sum())
            if n_total > MAX_SIZE * 16:
                raise FormatError(self.doc_path, name, f"at most {MAX_SIZE * 16:,} routed values in the build", f"{n_total:,}")
            for d in np.unique(dest):
                rows = table[dest == d][:, 1:]
                s, a = expand(rows)
                if a.size and a.max() >= cores[d].n_axons:
                    raise FormatError(self.doc_path, name, f"axons of core {int(d)} within its {cores[d].n_axons}",
                                      f"axon {int(a.max())}")
                core.routes.append((int(d), s, a))


def unit_arrays(cfg: LlamaConfig) -> dict:
    """A neuron unit's array parameters: name -> (shape, lo, hi)."""
    big = 1 << 40
    out = {f"scale_{s.name}": ((s.n_out(cfg),), 0, big) for s in stages.LAYER_STATIC}
    out[f"bias_{stages.ENTRY_STAGE.name}"] = ((stages.ENTRY_STAGE.n_out(cfg),), -big, big)
    out["v_range"] = ((cfg.n_kv_heads, cfg.head_dim), 1, big)
    out["rope_cos"] = out["rope_sin"] = ((cfg.max_seq_len, cfg.head_dim // 2), -big, big)
    return out


def wide_keys(point: stages.Point) -> tuple:
    """The unit parameters holding a residual reader's wide group: its leading channels and their Q;
    absent without one (`sdllm.formats.model.Precision`)."""
    return f"wide_{point.name}", f"wide_qmax_{point.name}"


def unit_scalars(cfg: LlamaConfig, quant: QuantSpec, layer: int) -> dict:
    """A layer's neuron unit's integer parameters: name -> (lo, hi) (the last's include the head's input)."""
    out = {"n_heads": (cfg.n_heads, cfg.n_heads), "n_kv_heads": (cfg.n_kv_heads, cfg.n_kv_heads),
           "head_dim": (cfg.head_dim, cfg.head_dim), "eps_fx": (0, 1 << 40), "down_block": (0, cfg.ffn_dim),
           "down_shift": (0, 32), "qk_shift": (-1, 32)}
    for p, i in _unit_points(cfg, layer):
        at = quant.at(p, i)
        out[f"qmax_{p.name}"] = (at.step_max,) * 2
        out[f"theta_{p.name}"] = (at.theta,) * 2
        if p.gamma:
            out[f"k_{p.name}"] = (0, p.width(cfg) - at.wide - 1)
        if at.wide:
            out.update({key: (v, v) for key, v in zip(wide_keys(p), (at.wide, at.q_max))})
    return out


def unit_wide_keys(cfg: LlamaConfig, quant: QuantSpec, layer: int) -> set:
    """The wide-group parameters a layer's unit may not hold: those of points without a group."""
    return {key for p, i in _unit_points(cfg, layer) if not quant.at(p, i).wide for key in wide_keys(p)}


def _unit_points(cfg: LlamaConfig, layer: int) -> list:
    """(point, layer or None) of the points a layer's unit quantises (the last's include the head's input)."""
    return [(p, layer) for p in stages.LAYER_POINTS] + ([(stages.HEAD_IN, None)] if layer == cfg.n_layers - 1 else [])
