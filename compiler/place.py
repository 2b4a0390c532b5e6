"""Pass 3: place cores on chips — sequential greedy (cores in graph order fill chip 0, then chip 1, ...).

The host (I/O) is off-chip: chip -1.
"""

from sdllm.compiler.ir import Network
from sdllm.errors import SdllmError


def mesh_position(index: int, mesh: tuple) -> tuple:
    return index % mesh[0], index // mesh[0]


def place(net: Network) -> Network:
    hw = net.hw
    slot = 0
    for core in net.cores:
        if core.type == "host_io":
            continue
        if slot >= hw.total_cores:
            needed = sum(c.type != "host_io" for c in net.cores)
            raise SdllmError(
                f"stage {core.node}: out of cores: the model needs {needed} cores, target {hw.name} has "
                f"{hw.total_cores} ({hw.cores_per_chip} per chip x {hw.chips} chips)"
            )
        core.chip, local = divmod(slot, hw.cores_per_chip)
        core.position = mesh_position(local, hw.mesh)
        slot += 1
    return net


def hops(a, b) -> int:
    """NoC hops between two placed cores (Manhattan distance on the mesh); 0 to or from the host."""
    if a.chip < 0 or b.chip < 0:
        return 0
    return abs(a.position[0] - b.position[0]) + abs(a.position[1] - b.position[1])
