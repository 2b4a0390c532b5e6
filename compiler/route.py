"""Pass 4: routing tables — every element of every operator-graph edge, from each core that
produces it (several for partial sums of fan-in tiles) to each core with an axon for it
(several when a stage's neurons are split across cores)."""

import numpy as np

from sdllm.compiler.ir import Network


def _in_range(indices: np.ndarray, start: int, size: int):
    """(local positions, edge offsets) of the node-space indices that fall on the edge."""
    local = np.nonzero((indices >= start) & (indices < start + size))[0]
    return local, indices[local] - start


def route(net: Network) -> Network:
    pending = {}
    for src, dst, data in net.graph.edges(data=True):
        s0, _ = net.nodes[src].outputs.range(data["src_seg"])
        d0, _ = net.nodes[dst].inputs.range(data["dst_seg"])
        size = data["size"]
        sources = [(c, *_in_range(c.neurons, s0, size)) for c in net.cores_of(src)]
        sinks = [(c, *_in_range(c.axons, d0, size)) for c in net.cores_of(dst)]
        for s_core, s_local, s_off in sources:
            if not len(s_local):
                continue
            for d_core, d_local, d_off in sinks:
                _, si, di = np.intersect1d(s_off, d_off, assume_unique=True, return_indices=True)
                if len(si):
                    pending.setdefault((s_core.id, d_core.id), []).append(np.stack([s_local[si], d_local[di]], 1))
    for (s_id, d_id), parts in sorted(pending.items()):
        pairs = np.concatenate(parts)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        net.cores[s_id].routes.append((d_id, pairs[:, 0], pairs[:, 1]))
    return net
