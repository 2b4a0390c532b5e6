"""Pass 4: routing tables — every element of every operator-graph edge, from each core that
produces it (several for partial sums of fan-in tiles) to each core with an axon for it
(several when a stage's neurons are split across cores)."""

import numpy as np

from sdllm.compiler.ir import Network


def _owners(cores, size: int, attr: str):
    """For each node-space index: list of (core, local index) owning it."""
    owners = [[] for _ in range(size)]
    for core in cores:
        for local, idx in enumerate(getattr(core, attr)):
            owners[idx].append((core, local))
    return owners


def route(net: Network) -> Network:
    pending = {}
    for src, dst, data in net.graph.edges(data=True):
        s_node, d_node = net.nodes[src], net.nodes[dst]
        s0, _ = s_node.outputs.range(data["src_seg"])
        d0, _ = d_node.inputs.range(data["dst_seg"])
        src_owners = _owners(net.cores_of(src), s_node.outputs.total, "neurons")
        dst_owners = _owners(net.cores_of(dst), d_node.inputs.total, "axons")
        for k in range(data["size"]):
            for d_core, d_local in dst_owners[d0 + k]:
                for s_core, s_local in src_owners[s0 + k]:
                    pending.setdefault((s_core.id, d_core.id), []).append((s_local, d_local))
    for (s_id, d_id), pairs in sorted(pending.items()):
        pairs = np.array(sorted(pairs), dtype=np.int64)
        net.cores[s_id].routes.append((d_id, pairs[:, 0], pairs[:, 1]))
    return net
