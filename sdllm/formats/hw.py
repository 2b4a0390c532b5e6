"""Hardware configurations (hw_configs/*.yaml): defined, read and validated here — the per-core
limits live in this one place.

A config is YAML: `name`, `format_version` 1, `core` (per-core limits), `chip` (cores and their
mesh), `system` (chips and their x·y·z topology), `energy` (pJ per event), `timing` (µs per
step). A system names its chip with `base: NAME` (a config in hw_configs/) and overrides what
differs, section by section. Every value is checked: type, range, finiteness, and the sections'
consistency; YAML aliases are refused (a config has no use for them, and nested ones expand
without bound).
"""

import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from sdllm import codes
from sdllm.errors import SdllmError
from sdllm.formats.fields import Doc, load_yaml

FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 20
MAX_BASE_DEPTH = 8
CORE_LIMITS = {  # field: (lo, hi) — generous bounds around any neuromorphic core
    "max_neurons": (1, 1 << 20),
    "synapse_memory_bits": (1, 1 << 32),
    "synapse_index_bits": (1, 32),
    "axon_overhead_bits": (0, 1 << 10),
    "max_input_axons": (1, 1 << 20),
    "max_output_routes": (1, 1 << 24),
    "max_weight_bits": (1, 16),
    "graded_payload_bits": (2, 32),
}
ENERGY_KEYS = ("sop_pj", "neuron_update_pj", "spike_in_tile_pj", "hop_pj", "chip_crossing_pj")
GRADED_SOP_KEY = "graded_sop_pj"  # required where the target takes graded spikes as synaptic inputs
BINARY_CODES = ("ternary", "bitplane", "naf")  # what a core with ±1 spikes takes: the default spike_codes
MAX_CORES_PER_CHIP = 1 << 12
MAX_CHIPS = 1 << 14
MAX_TOTAL_CORES = 1 << 20
SECTIONS = {"name", "format_version", "base", "core", "chip", "system", "energy", "timing"}
SECTION_KEYS = {"core": {*CORE_LIMITS, "spike_codes"}, "chip": {"cores_per_chip", "mesh", "embedded_cpus"},
                "system": {"name", "chips", "topology"}, "energy": {*ENERGY_KEYS, GRADED_SOP_KEY}, "timing": {"timestep_us"}}


@dataclass(frozen=True)
class CoreLimits:
    max_neurons: int
    synapse_memory_bits: int
    synapse_index_bits: int
    axon_overhead_bits: int
    max_input_axons: int
    max_output_routes: int
    max_weight_bits: int
    graded_payload_bits: int
    spike_codes: tuple = BINARY_CODES  # the codes its synapses take as inputs (`sdllm.codes`)

    @property
    def payload_max(self) -> int:
        """Largest |value| a graded spike carries (signed payload)."""
        return (1 << (self.graded_payload_bits - 1)) - 1


@dataclass(frozen=True)
class HwConfig:
    name: str
    core: CoreLimits
    cores_per_chip: int
    mesh: tuple
    chips: int
    energy: dict
    timestep_us: float
    raw: dict
    topology: tuple = (1, 1, 1)  # chips as an x·y·z mesh

    @property
    def total_cores(self) -> int:
        return self.cores_per_chip * self.chips

    def chip_xyz(self, chips) -> np.ndarray:
        """(n, 3) positions of chips in the system's x·y·z chip mesh."""
        c = np.asarray(chips).reshape(-1)
        x, y, _ = self.topology
        return np.stack([c % x, (c // x) % y, c // (x * y)], 1)

    def chip_hops(self, a: int, b: int) -> int:
        """Chip-to-chip links a spike crosses between chips a and b (Manhattan distance in the mesh)."""
        return int(np.abs(self.chip_xyz(a) - self.chip_xyz(b)).sum())

    def grid_xyz(self, chips, positions) -> np.ndarray:
        """Cores in one system-wide mesh: chip (cx, cy, cz) holds the cores at x = cx·mesh_x + x,
        y = cy·mesh_y + y, in plane z = cz (assumption: chips join their meshes edge to edge,
        as Loihi's chip-to-chip links extend the NoC [I21]). (n, 3) ints."""
        c = self.chip_xyz(chips)
        pos = np.asarray(positions).reshape(-1, 2)
        return np.stack([c[:, 0] * self.mesh[0] + pos[:, 0], c[:, 1] * self.mesh[1] + pos[:, 1], c[:, 2]], 1)

    def links(self, chip_a, pos_a, chip_b, pos_b):
        """(NoC hops, chip crossings) between cores, elementwise over arrays: Manhattan distance
        in the system-wide mesh, and the chip-to-chip links on the way."""
        hops = np.abs(self.grid_xyz(chip_a, pos_a) - self.grid_xyz(chip_b, pos_b)).sum(1)
        return hops, np.abs(self.chip_xyz(chip_a) - self.chip_xyz(chip_b)).sum(1)

    def snake(self) -> list:
        """Chips in an order where each is one link from the previous: boustrophedon rows in each
        plane, planes in turn."""
        x, y, z = self.topology
        order = []
        for k in range(z):
            rows = range(y) if k % 2 == 0 else range(y - 1, -1, -1)
            for n, j in enumerate(rows):
                cols = range(x) if n % 2 == 0 else range(x - 1, -1, -1)
                order += [i + j * x + k * x * y for i in cols]
        return order


def known() -> list:
    """The names of the configs that ship with sdllm."""
    return sorted(f.name[:-5] for f in resources.files("sdllm.hw_configs").iterdir() if f.name.endswith(".yaml"))


def resolve(target: str) -> str:
    """A target name (a config shipped in hw_configs/) or a path to a YAML file."""
    if target in known():
        with resources.as_file(resources.files("sdllm.hw_configs") / f"{target}.yaml") as path:
            return str(path)
    if os.path.isfile(target):
        return target
    raise SdllmError(f"--target {target!r}: no such hardware config (known: {', '.join(known())}; or give a YAML path)")


def _read_yaml(path: str) -> dict:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise SdllmError(f"{path}: a hardware config of {size:,} bytes; at most {MAX_FILE_BYTES:,} are read")
        with open(path, "rb") as f:
            raw = load_yaml(f)
    except yaml.YAMLError as e:
        raise SdllmError(f"{path}: not a valid hardware config (YAML: {' '.join(str(e).split())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SdllmError(f"{path}: unreadable hardware config ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise SdllmError(f"{path}: not a valid hardware config (expected a mapping, found {type(raw).__name__})")
    return raw


def _read(path: str, seen: tuple = ()) -> dict:
    """A config, with `base: NAME` merged in: the base's sections, each updated by this file's."""
    raw = _read_yaml(path)
    if "base" in raw:
        name = raw["base"]
        if not isinstance(name, str) or name not in known():
            raise SdllmError(f"{path}: base: expected one of the shipped configs ({', '.join(known())}), found {name!r}")
        if name in seen or len(seen) >= MAX_BASE_DEPTH:
            chain = " -> ".join((*seen, name))
            raise SdllmError(f"{path}: base: configs name each other in a cycle ({chain})")
        base = _read(resolve(name), (*seen, name))
        for key, value in raw.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        raw = base
    return raw


def load(target: str) -> HwConfig:
    path = resolve(target)
    name = os.path.basename(path)[:-5] if path.endswith(".yaml") else None
    return from_raw(_read(path, (name,) if name in known() else ()), path)


def from_raw(raw: dict, where: str = "hw") -> HwConfig:
    """A config from its merged YAML mapping (as a build directory stores it), every value checked."""
    d = Doc(raw, where)
    if not isinstance(raw, dict):
        d.fail(None, "a mapping", type(raw).__name__)
    unknown = sorted(set(raw) - SECTIONS, key=str)
    if unknown:
        d.fail(unknown[0], f"one of the sections {', '.join(sorted(SECTIONS))}", "an unknown section")
    if d.raw("format_version") != FORMAT_VERSION:
        d.fail("format_version", str(FORMAT_VERSION), d.raw("format_version"))
    sections = {}
    for section, keys in SECTION_KEYS.items():
        s = sections[section] = d.doc(section)
        extra = sorted(set(s.value) - keys, key=str)
        if extra:
            s.fail(extra[0], f"one of {', '.join(sorted(keys))}", "an unknown field")
    spike_codes = BINARY_CODES
    if sections["core"].has("spike_codes"):
        listed = [item.value for item in sections["core"].items("spike_codes", max_length=len(codes.CARRIED))]
        if not listed or any(c not in codes.CARRIED for c in listed) or len(set(listed)) != len(listed):
            sections["core"].fail("spike_codes", f"distinct codes among {', '.join(codes.CARRIED)}", listed)
        spike_codes = tuple(c for c in codes.CARRIED if c in listed)
    core = CoreLimits(**{k: sections["core"].int(k, lo, hi) for k, (lo, hi) in CORE_LIMITS.items()}, spike_codes=spike_codes)
    chip, system = sections["chip"], sections["system"]
    cores_per_chip = chip.int("cores_per_chip", 1, MAX_CORES_PER_CHIP)
    mesh = tuple(chip.ints("mesh", 2, 1, MAX_CORES_PER_CHIP))
    if mesh[0] * mesh[1] < cores_per_chip:
        chip.fail("mesh", f"room for cores_per_chip {cores_per_chip}", f"{mesh[0]} x {mesh[1]}")
    if chip.has("embedded_cpus"):
        chip.int("embedded_cpus", 0, 1 << 10)
    chips = system.int("chips", 1, MAX_CHIPS)
    topology = tuple(system.ints("topology", 3, 1, MAX_CHIPS)) if system.has("topology") else (chips, 1, 1)
    if int(np.prod(topology)) != chips:
        system.fail("topology", f"3 positive sizes whose product is system.chips {chips}", list(topology))
    if chips * cores_per_chip > MAX_TOTAL_CORES:
        d.fail("system", f"at most {MAX_TOTAL_CORES:,} cores in all", f"{chips:,} chips x {cores_per_chip:,} cores")
    if system.has("name"):
        system.str("name")
    energy = {k: sections["energy"].float(k, 0.0, 1e9) for k in ENERGY_KEYS}
    if "graded" in spike_codes or sections["energy"].has(GRADED_SOP_KEY):
        energy[GRADED_SOP_KEY] = sections["energy"].float(GRADED_SOP_KEY, 0.0, 1e9)
    timestep = sections["timing"].float("timestep_us", 0.0, 1e9, lo_open=True)
    return HwConfig(name=d.str("name", max_length=200), core=core, cores_per_chip=cores_per_chip, mesh=mesh,
                    chips=chips, energy=energy, timestep_us=timestep, raw=raw, topology=topology)
