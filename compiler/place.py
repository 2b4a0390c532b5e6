"""Pass 4: place cores on chips, to keep spike traffic short.

Traffic is counted per token from the routing tables: packets per route, weighted by the
measured spike rates of the units' outputs when the compiler has them (`compiler.rates`),
else one per routed value. Cost = Σ packets x NoC hops in the system-wide mesh (`HwConfig.links`).

- `greedy`, the baseline: cores in graph order fill chip 0, then chip 1, ..., row by row.
- `traffic` (default): cut the core sequence into chips where the least traffic crosses
  (dynamic programming over cut points, a chip's cores at most per chunk), lay the chunks
  along a path of adjacent chips, and on each chip put the busiest core first and every
  next one — the one with most traffic to cores already placed — on the free position
  nearest (traffic-weighted) to its placed partners, on this chip or earlier ones.

A neuron unit spanning several cores takes that many positions on one chip. The host is off-chip.
Adds `placement` (per core its chip and positions; the traffic figures of both methods).
"""

from collections import defaultdict, deque

import numpy as np
from tqdm import tqdm

from sdllm.compiler.ir import Network, Placement
from sdllm.compiler.rates import output_rates
from sdllm.errors import SdllmError
from sdllm.formats.build import expand
from sdllm.stages import NodeKind

METHODS = ("traffic", "greedy")


def mesh_position(index: int, mesh: tuple) -> tuple:
    return index % mesh[0], index // mesh[0]


def traffic(net: Network):
    """(src core, dst core, packets per token) arrays over on-chip routes (the host excluded)."""
    rates = {name: output_rates(net, node) for name, node in net.nodes.items() if node.kind is NodeKind.UNIT}
    src, dst, w = [], [], []
    for c in net.cores:
        if not c.on_chip:
            continue
        for d, table in net.routes[c.id].routes:
            if not net.cores[d].on_chip:
                continue
            n = float(table[:, 2].sum())
            if c.node in rates and not c.partial:
                n = float(rates[c.node][c.neurons[expand(table)[0]]].sum())
            src.append(c.id)
            dst.append(d)
            w.append(n)
    return np.array(src, np.int64), np.array(dst, np.int64), np.array(w)


def cost(net: Network, edges, chips: np.ndarray, positions: np.ndarray) -> dict:
    """Spike-hops and chip crossings per token of a placement (chips, positions indexed by core id)."""
    src, dst, w = edges
    hops, crossings = net.hw.links(chips[src], positions[src], chips[dst], positions[dst])
    return {"spike_hops_per_token": float(w @ hops), "chip_crossings_per_token": float(w @ crossings)}


def _out_of_cores(net: Network, needed: int):
    hw = net.hw
    return SdllmError(f"placement: out of cores: the model needs {needed} cores, target {hw.name} has "
                      f"{hw.total_cores} ({hw.cores_per_chip} per chip x {hw.chips} chips)")


def pack(cores, hw) -> list:
    """(core, its first slot) of every on-chip core, filling chips in index order (chip = slot //
    cores_per_chip), a core spanning several cores never across two chips: greedy's order, and the
    fewest chips any placement needs (`chips_needed`). Chips are not bounded here."""
    out, slot = [], 0
    for c in cores:
        if not c.on_chip:
            continue
        if c.span > hw.cores_per_chip:
            raise SdllmError(f"stage {c.node}: core {c.name} spans {c.span} cores, a chip of {hw.name} holds {hw.cores_per_chip}")
        if slot % hw.cores_per_chip + c.span > hw.cores_per_chip:
            slot += hw.cores_per_chip - slot % hw.cores_per_chip
        out.append((c, slot))
        slot += c.span
    return out


def chips_needed(cores, hw) -> int:
    """Chips the cores fill (`pack`): the placement fits the target exactly when this is at most hw.chips."""
    packed = pack(cores, hw)
    if not packed:
        return 0
    c, slot = packed[-1]
    return (slot + c.span - 1) // hw.cores_per_chip + 1


def greedy(net: Network) -> dict:
    """core id -> (chip, [positions]): fill chips in index order, each in row-major order."""
    hw, out = net.hw, {}
    for c, slot in pack(net.cores, hw):
        chip, local = divmod(slot, hw.cores_per_chip)
        if chip >= hw.chips:
            raise _out_of_cores(net, sum(c.span for c in net.cores))
        out[c.id] = (chip, [mesh_position(local + k, hw.mesh) for k in range(c.span)])
    return out


def _chunks(seq: list, spans: np.ndarray, cut: np.ndarray, cap: int, per_chunk: float) -> list:
    """Cut seq into consecutive chunks of at most cap span each, minimising the traffic cut
    plus per_chunk for every chunk."""
    n = len(seq)
    prefix = np.concatenate([[0], np.cumsum(spans)])
    f = np.full(n + 1, np.inf)
    f[0] = 0.0
    back = np.zeros(n + 1, np.int64)
    window, lo = deque([0]), 0
    for p in range(1, n + 1):
        while prefix[p] - prefix[lo] > cap:
            lo += 1
        while window and window[0] < lo:
            window.popleft()
        q = window[0]  # never empty: greedy() has checked that every core fits a chip
        f[p], back[p] = f[q] + cut[p] + per_chunk, q
        while window and f[window[-1]] >= f[p]:
            window.pop()
        window.append(p)
    bounds, p = [], n
    while p > 0:
        bounds.append((back[p], p))
        p = back[p]
    return [seq[a:b] for a, b in reversed(bounds)]


def traffic_aware(net: Network, edges, progress: bool = False) -> dict:
    hw = net.hw
    seq = [c for c in net.cores if c.on_chip]
    order = {c.id: k for k, c in enumerate(seq)}
    spans = np.array([c.span for c in seq])
    src, dst, w = edges
    a, b = np.array([order[i] for i in src], np.int64), np.array([order[i] for i in dst], np.int64)
    diff = np.zeros(len(seq) + 2)
    np.add.at(diff, np.minimum(a, b) + 1, w)
    np.add.at(diff, np.maximum(a, b) + 1, -w)
    cut = np.cumsum(diff)[: len(seq) + 1]
    cut[len(seq)] = 0.0
    for per_chunk in (0.0, *(float(w.sum() + 1) * 10.0**k for k in range(-4, 7))):  # fewer chips, as needed
        chunks = _chunks(seq, spans, cut, hw.cores_per_chip, per_chunk)
        if len(chunks) <= hw.chips:
            break
    else:
        return greedy(net)

    neighbours = defaultdict(lambda: defaultdict(float))
    for i, j, x in zip(src.tolist(), dst.tolist(), w.tolist()):
        if i != j:
            neighbours[i][j] += x
            neighbours[j][i] += x
    slots = [mesh_position(k, hw.mesh) for k in range(hw.cores_per_chip)]
    centre = np.array([(hw.mesh[0] - 1) / 2, (hw.mesh[1] - 1) / 2])
    placed = {}  # core id -> (chip, positions)
    grid = {}  # core id -> system-wide (x, y, z) of its first position
    for chunk, chip in tqdm(list(zip(chunks, hw.snake())), desc="place", unit="chip", disable=None if progress else True, leave=False):
        free = list(range(len(slots)))
        pos = np.array(slots)
        gxyz = hw.grid_xyz(np.full(len(slots), chip), pos)
        from_centre = np.abs(pos - centre).sum(1)
        ids = [c.id for c in chunk]
        span = {c.id: c.span for c in chunk}
        attach = {i: sum(x for j, x in neighbours[i].items() if j in grid) for i in ids}
        weight = {i: sum(neighbours[i].values()) for i in ids}
        todo = set(ids)
        while todo:
            cid = max(todo, key=lambda i: (attach[i], weight[i], -i))
            todo.discard(cid)
            partners = [(grid[j], x) for j, x in neighbours[cid].items() if j in grid]
            f = np.array(free)
            score = from_centre[f] * 1e-9
            if partners:
                g = np.array([p for p, _ in partners])
                x = np.array([x for _, x in partners])
                score = score + np.abs(gxyz[f][:, None, :] - g[None]).sum(2) @ x
            best = f[int(np.argmin(score))]
            near = f[np.lexsort((f, np.abs(pos[f] - pos[best]).sum(1)))][: span[cid]]
            for k in near:
                free.remove(int(k))
            placed[cid] = (chip, [tuple(int(v) for v in pos[k]) for k in near])
            grid[cid] = gxyz[near[0]]
            for j, x in neighbours[cid].items():
                if j in attach:
                    attach[j] += x
    return placed


def link_loads(hw, chip_traffic: dict) -> dict:
    """(chip, neighbouring chip) -> packets per token over that chip-to-chip link, each chip
    pair's traffic sent dimension-ordered (x, then y, then z) through the chip mesh."""
    loads = defaultdict(float)
    for (a, b), x in chip_traffic.items():
        here, goal = hw.chip_xyz(a)[0].tolist(), hw.chip_xyz(b)[0].tolist()
        for axis in range(3):
            while here[axis] != goal[axis]:
                nxt = list(here)
                nxt[axis] += 1 if goal[axis] > here[axis] else -1
                loads[_chip_at(hw, here), _chip_at(hw, nxt)] += x
                here = nxt
    return loads


def _chip_at(hw, xyz) -> int:
    return int(xyz[0] + xyz[1] * hw.topology[0] + xyz[2] * hw.topology[0] * hw.topology[1])


def place(net: Network, method: str = "traffic", progress: bool = False) -> Network:
    net.need("place", "cores", "routes")
    if method not in METHODS:
        raise SdllmError(f"--placement: one of {', '.join(METHODS)}, got {method!r}")
    edges = traffic(net)
    baseline = greedy(net)
    chosen = baseline if method == "greedy" else traffic_aware(net, edges, progress)
    figures = {}
    for name, where in (("greedy", baseline), (method, chosen)):
        chips = np.full(len(net.cores), -1)
        positions = np.zeros((len(net.cores), 2), np.int64)
        for cid, (chip, pos) in where.items():
            chips[cid], positions[cid] = chip, pos[0]
        figures[name] = cost(net, edges, chips, positions)
    src, dst, w = edges
    between = defaultdict(float)
    for a, b, x in zip(chips[src].tolist(), chips[dst].tolist(), w.tolist()):
        if a != b:
            between[a, b] += x
    g = figures["greedy"]["spike_hops_per_token"]
    summary = {
        "method": method,
        "rates": f"measured on {net.rates.tokens} tokens of calibration text" if net.rates else "fan-out (one packet per routed value)",
        **figures[method],
        "greedy_spike_hops_per_token": g,
        "greedy_chip_crossings_per_token": figures["greedy"]["chip_crossings_per_token"],
        "hops_vs_greedy": round(figures[method]["spike_hops_per_token"] / g, 4) if g else 1.0,
        "chip_traffic": [[a, b, round(x, 3)] for (a, b), x in sorted(between.items())],
    }
    loads = link_loads(net.hw, between)
    summary["link_loads"] = [[a, b, round(x, 3)] for (a, b), x in sorted(loads.items())]
    summary["max_link_load"] = round(max(loads.values(), default=0.0), 3)
    where = {cid: (chip, [tuple(p) for p in pos]) for cid, (chip, pos) in sorted(chosen.items())}
    return net.add("place", placement=Placement(where, summary))
