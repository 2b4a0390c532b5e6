"""A group of cores simulated together: the unit of one Lava process (one core, or a whole chip)
and, with every core in one group, the single-process lockstep simulator.

Inside a group, the routing tables deliver outputs computed in step t to the member cores'
axons in step t+1 directly; outputs bound for cores of other groups are gathered per
destination group, to be sent over Lava ports in step t+1. Either way DESIGN §3 holds.
"""

import numpy as np

from sdllm.runtime.behaviours import make_behaviour


class CoreGroup:
    def __init__(self, build, core_ids, group_of: dict, n_positions: int, prompt):
        self.cores = [build.cores[i] for i in core_ids]
        self.behaviours = [make_behaviour(c, build, n_positions, prompt) for c in self.cores]
        local = {c.id: k for k, c in enumerate(self.cores)}
        offsets = np.cumsum([0] + [c.n_axons for c in self.cores])
        self.axon_slices = [slice(offsets[k], offsets[k + 1]) for k in range(len(self.cores))]
        self.n_axons = int(offsets[-1])
        self.internal = []  # (src member, dst member, src index, dst axon)
        external = {}  # destination group -> [(src member, src index, dst group-axon index)]
        for k, c in enumerate(self.cores):
            for dest, src, dst in c.routes:
                if dest in local:
                    self.internal.append((k, local[dest], src, dst))
                else:
                    external.setdefault(group_of[dest], []).append((k, src, dst, dest))
        self.external = external
        # NoC traffic per position: [packets, packet-hops, chip crossings]; a packet is one
        # non-zero value (a spike or a graded payload) sent on one route.
        self.period = build.schedule["period"]
        self.traffic = np.zeros((n_positions, 3), np.int64)
        self.route_costs = [(k, src, *build.link(c.id, dest)) for k, c in enumerate(self.cores)
                            for dest, src, _ in c.routes if build.cores[dest].type != "host_io" and c.type != "host_io"]
        self.outputs = [b.zeros for b in self.behaviours]
        for k, (c, b) in enumerate(zip(self.cores, self.behaviours)):
            if c.type == "host_io":
                self.outputs[k] = b.first_output()

    def resolve_external(self, axon_offset: dict) -> None:
        """Fix the destination axon indices once every group's layout is known: self.ports is
        [(destination group, [(src member, src index, group-axon index)])], in port order.

        axon_offset: core id -> offset of that core's axons in its group's InPort.
        """
        self.ports = [(group, [(k, src, axon_offset[dest] + dst) for k, src, dst, dest in self.external[group]])
                      for group in sorted(self.external)]

    def outgoing(self, sizes: list) -> list:
        """This step's outputs bound for other groups, one vector per port."""
        out = []
        for (_, routes), n in zip(self.ports, sizes):
            v = np.zeros(n, np.int64)
            for k, src, dst in routes:
                v[dst] += self.outputs[k][src]
            out.append(v)
        return out

    def step(self, t: int, x) -> None:
        """Receive x (this group's axons, from other groups) and what members sent each other."""
        inbox = [np.array(x[s], dtype=np.int64) for s in self.axon_slices]
        for k, d, src, dst in self.internal:
            inbox[d][dst] += self.outputs[k][src]
        self.outputs = [b.step(t, v) for b, v in zip(self.behaviours, inbox)]
        row = self.traffic[t // self.period]
        for k, src, hops, crossing in self.route_costs:
            n = np.count_nonzero(self.outputs[k][src])
            if n:
                row += (n, n * hops, n * crossing)

    def sops(self) -> dict:
        return {c.name: b.sops for c, b in zip(self.cores, self.behaviours) if c.type != "host_io"}

    def host(self):
        return next((b for c, b in zip(self.cores, self.behaviours) if c.type == "host_io"), None)


def partition(build, granularity: str) -> list:
    """Core ids per group: 'core' (one each), 'chip' (one per chip; the off-chip host alone) or 'all'."""
    if granularity == "all":
        return [[c.id for c in build.cores]]
    if granularity == "core":
        return [[c.id] for c in build.cores]
    chips = {}
    for c in build.cores:
        chips.setdefault(c.chip, []).append(c.id)
    return [chips[k] for k in sorted(chips)]


def make_groups(build, granularity: str, n_positions: int, prompt) -> list:
    parts = partition(build, granularity)
    group_of = {cid: g for g, ids in enumerate(parts) for cid in ids}
    groups = [CoreGroup(build, ids, group_of, n_positions, prompt) for ids in parts]
    axon_offset = {c.id: s.start for group in groups for c, s in zip(group.cores, group.axon_slices)}
    for group in groups:
        group.resolve_external(axon_offset)
    return groups
