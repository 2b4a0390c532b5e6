"""Hardware configurations (hw_configs/*.yaml): per-core limits live here, in one place."""

import os
from dataclasses import dataclass

import numpy as np
import yaml

from sdllm.errors import SdllmError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hw_configs")
CORE_KEYS = (
    "max_neurons", "synapse_memory_bits", "synapse_index_bits", "axon_overhead_bits",
    "max_input_axons", "max_output_routes", "max_weight_bits", "graded_payload_bits",
)


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


def resolve(target: str) -> str:
    """A target name (a file in hw_configs/) or a path to a YAML file."""
    if os.path.isfile(target):
        return target
    path = os.path.join(CONFIG_DIR, f"{target}.yaml")
    if os.path.isfile(path):
        return path
    known = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
    raise SdllmError(f"--target {target!r}: no such hardware config (known: {', '.join(known)}; or give a YAML path)")


def _read(path: str) -> dict:
    """A config, with `base: NAME` merged in: the base's sections, each updated by this file's."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    if isinstance(raw, dict) and "base" in raw:
        base = _read(resolve(str(raw["base"])))
        for key, value in raw.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        raw = base
    return raw


def load(target: str) -> HwConfig:
    path = resolve(target)
    try:
        raw = _read(path)
    except yaml.YAMLError as e:
        raise SdllmError(f"{path}: not a valid hardware config (YAMLError: {e})") from None
    return from_raw(raw, path)


def from_raw(raw: dict, where: str = "hw") -> HwConfig:
    """A config from its merged YAML mapping (as a build directory stores it)."""
    try:
        core = CoreLimits(**{k: int(raw["core"][k]) for k in CORE_KEYS})
        chip, system = raw["chip"], raw["system"]
        cfg = HwConfig(
            name=str(raw["name"]),
            core=core,
            cores_per_chip=int(chip["cores_per_chip"]),
            mesh=tuple(int(v) for v in chip["mesh"]),
            chips=int(system["chips"]),
            energy={k: float(v) for k, v in raw["energy"].items()},
            timestep_us=float(raw["timing"]["timestep_us"]),
            raw=raw,
            topology=tuple(int(v) for v in system.get("topology", (int(system["chips"]), 1, 1))),
        )
        if int(np.prod(cfg.topology)) != cfg.chips or len(cfg.topology) != 3:
            raise ValueError(f"system.topology {list(cfg.topology)} must be 3 sizes whose product is system.chips {cfg.chips}")
        return cfg
    except (KeyError, TypeError, ValueError) as e:
        raise SdllmError(f"{where}: not a valid hardware config ({type(e).__name__}: {e})") from None
