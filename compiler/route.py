"""Pass 3: routing tables — every element of every operator-graph edge, from each core that
produces it (a stage's reduce cores when its fan-in is split) to each core with an axon for it
(several when a stage's neurons are split across cores); and, inside a stage with split fan-in,
every partial sum from its tile to the reduce core that adds it.

A route is a run: (source output start, destination axon start, length) — consecutive outputs
to consecutive axons of one destination core. A core's table holds one entry per (output,
destination) pair when that fits its output-route limit, else one entry per run (compressed).
Adds `routes` (core id -> RouteTable).
"""

from collections import defaultdict

import numpy as np
from tqdm import tqdm

from sdllm.compiler.ir import Network, RouteTable
from sdllm.formats.build import runs
from sdllm.stages import CoreType


def _span(indices: np.ndarray, start: int, size: int):
    """(local positions, edge offsets) of the node-space indices that fall on the edge."""
    local = np.nonzero((indices >= start) & (indices < start + size))[0]
    return local, indices[local] - start


def _edge_pairs(net: Network, src: str, dst: str, data: dict, by_node: dict, pending: dict) -> None:
    s0, _ = net.nodes[src].outputs.range(data["src_seg"])
    d0, _ = net.nodes[dst].inputs.range(data["dst_seg"])
    size = data["size"]
    sources = [(c, *_span(c.neurons, s0, size)) for c in by_node[src] if c.sends_node_outputs]
    sinks = [(c, *_span(c.axons, d0, size)) for c in by_node[dst] if c.has_node_inputs]
    sources = [(c, loc, off) for c, loc, off in sources if len(loc)]
    sinks = [(c, loc, off, off.min(), off.max()) for c, loc, off in sinks if len(loc)]
    for s_core, s_local, s_off in sources:
        lo, hi = s_off.min(), s_off.max()
        for d_core, d_local, d_off, d_lo, d_hi in sinks:
            if d_hi < lo or d_lo > hi:
                continue
            _, si, di = np.intersect1d(s_off, d_off, assume_unique=True, return_indices=True)
            if len(si):
                pending[s_core.id, d_core.id].append(np.stack([s_local[si], d_local[di]], 1))


def _reduce_pairs(cores: list, pending: dict) -> None:
    """Partial tile (fan-in part a) neuron n -> reduce core axon a·m + (n - r0)."""
    tiles = [c for c in cores if c.partial]
    for r in (c for c in cores if c.type == CoreType.REDUCE):
        r0, r1 = int(r.neurons[0]), int(r.neurons[-1]) + 1
        for t in tiles:
            n0, n1, _, _ = t.block
            lo, hi = max(n0, r0), min(n1, r1)
            if lo < hi:
                n = np.arange(lo, hi)
                pending[t.id, r.id].append(np.stack([n - n0, t.params["fan_in_part"] * (r1 - r0) + n - r0], 1))


def route(net: Network, progress: bool = False) -> Network:
    net.need("route", "graph", "cores")
    by_node = net.cores_by_node()
    pending = defaultdict(list)
    for src, dst, data in tqdm(list(net.graph.edges.edges(data=True)), desc="route", unit="edge",
                               disable=None if progress else True, leave=False):
        _edge_pairs(net, src, dst, data, by_node, pending)
    for cores in by_node.values():
        _reduce_pairs(cores, pending)
    lim = net.hw.core
    routes = {c.id: [] for c in net.cores}
    for (s_id, d_id), parts in sorted(pending.items()):
        pairs = np.concatenate(parts)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        routes[s_id].append((d_id, runs(pairs[:, 0], pairs[:, 1])))
    tables = {}
    for cid, r in routes.items():
        n = int(sum(t[:, 2].sum() for _, t in r))
        compressed = n > lim.max_output_routes
        tables[cid] = RouteTable(tuple(r), sum(len(t) for _, t in r) if compressed else n, compressed)
    return net.add("route", routes=tables)
