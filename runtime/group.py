"""A group of cores simulated together: the unit of one Lava process (one core, or a whole chip)
and, with every core in one group, the single-process lockstep simulator.

Inside a group, the routing tables deliver outputs computed in step t to the member cores'
axons in step t+1 directly; outputs bound for cores of other groups are gathered per
destination group (only the axons their routes reach), to be sent over Lava ports in step t+1.
Either way docs/DESIGN.md §3 holds. A step runs only the members that act in its phase
(`CoreBehaviour.phases`); routes touch only outputs that are non-zero.
"""

import mmap

import numpy as np

from sdllm.cores import behaviour
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline
from sdllm.stages import CoreType


def chip_pairs(build) -> list:
    """(source chip, destination chip) of every route between cores on different chips, sorted:
    the rows of a run's measured chip-to-chip traffic (the same list in every group)."""
    pairs = set()
    for c in build.cores:
        for dest, _, _ in c.routes:
            d = build.cores[dest]
            if c.chip >= 0 and d.chip >= 0 and c.chip != d.chip:
                pairs.add((c.chip, d.chip))
    return sorted(pairs)


def packets_by_pair(build, counts) -> list:
    """[(source chip, destination chip, packets)] from a count per `chip_pairs` row."""
    return [(a, b, int(n)) for (a, b), n in zip(chip_pairs(build), counts)]


def _entries(ptr: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Indices of the CSR entries of rows `at` (ptr: row starts, length rows + 1)."""
    first, count = ptr[at], ptr[at + 1] - ptr[at]
    return np.repeat(first - np.cumsum(count) + count, count) + np.arange(int(count.sum()))


def _csr(rows: list, values: list, n_rows: int):
    """(row pointers, values sorted by row) from parallel lists of index arrays."""
    r = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    v = np.concatenate(values).astype(np.int64) if values else np.zeros(0, np.int64)
    order = np.argsort(r, kind="stable")
    return np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n_rows))]), v[order]


def shared_zeros(shape, dtype=np.int64) -> np.ndarray:
    """Zeros in anonymous shared memory: a process forked after this writes into the same array
    its parent reads. No file and no named segment: the memory goes with the last process that
    maps it, whatever ends them."""
    n = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, max(n * np.dtype(dtype).itemsize, 1)), dtype, count=n).reshape(shape)


def _shared_copy(a: np.ndarray) -> np.ndarray:
    s = shared_zeros(a.shape, a.dtype)
    s[...] = a
    return s


class CoreGroup:
    def __init__(self, build, core_ids, group_of: dict, timeline: Timeline, prompt, sampler=GREEDY):
        n_positions = timeline.positions
        self.timeline = timeline
        self.cores = [build.cores[i] for i in core_ids]
        self.behaviours = [behaviour(c, build, timeline, prompt, sampler) for c in self.cores]
        local = {c.id: k for k, c in enumerate(self.cores)}
        offsets = np.cumsum([0] + [c.n_axons for c in self.cores])
        self.axon_slices = [slice(offsets[k], offsets[k + 1]) for k in range(len(self.cores))]
        self.n_axons = int(offsets[-1])
        out_offsets = np.cumsum([0] + [c.n_neurons for c in self.cores])
        self.out_slices = [slice(out_offsets[k], out_offsets[k + 1]) for k in range(len(self.cores))]
        self.n_outputs = int(out_offsets[-1])
        # routes inside the group, flattened: output position (all members' outputs concatenated)
        # -> group axon; routes to other groups kept per destination group
        internal_src, internal_dst = [], []
        external = {}  # destination group -> [(src member, src index, dst axon, dest core id)]
        for k, c in enumerate(self.cores):
            for dest, src, dst in c.routes:
                if dest in local:
                    internal_src.append(out_offsets[k] + src)
                    internal_dst.append(offsets[local[dest]] + dst)
                else:
                    external.setdefault(group_of[dest], []).append((k, src, dst, dest))
        # by output position: a step touches only the non-zero ones
        self.internal_ptr, self.internal_dst = _csr(internal_src, internal_dst, self.n_outputs)
        self.external = external
        self.inputs = []  # [(source group, axons its port reaches)], set with the other groups (`make_groups`)
        # NoC traffic per position: [packets, packet-hops, chip crossings]; a packet is one
        # non-zero value (a spike or a graded payload) sent on one route.
        self.period = build.schedule.period
        self.traffic = np.zeros((n_positions, 3), np.int64)
        # measured per run: non-zero outputs (spikes, graded payloads) each member sends per
        # position, and packets per (source chip, destination chip) pair (`chip_pairs`)
        self.out_bounds = out_offsets
        self.spikes = np.zeros((len(self.cores), n_positions), np.int64)
        pair_index = {pair: i for i, pair in enumerate(chip_pairs(build))}
        self.chip_packets = np.zeros(max(len(pair_index), 1), np.int64)
        cost_src, cost_hops, cost_cross, pair_src, pair_of = [], [], [], [], []
        for k, c in enumerate(self.cores):
            for dest, src, _ in c.routes:
                if build.cores[dest].type != CoreType.HOST and c.type != CoreType.HOST:
                    hops, crossing = build.link(c.id, dest)
                    cost_src.append(out_offsets[k] + src)
                    cost_hops.append(np.full(len(src), hops))
                    cost_cross.append(np.full(len(src), crossing))
                    pair = (c.chip, build.cores[dest].chip)
                    if pair in pair_index:
                        pair_src.append(out_offsets[k] + src)
                        pair_of.append(np.full(len(src), pair_index[pair]))
        self.pair_ptr, self.pair_of = _csr(pair_src, pair_of, self.n_outputs)
        # per output position: (routes leaving it, their hops, their chip crossings)
        self.cost = np.zeros((3, self.n_outputs), np.int64)
        if cost_src:
            at = np.concatenate(cost_src)
            for row, values in enumerate((np.ones(len(at), np.int64), np.concatenate(cost_hops), np.concatenate(cost_cross))):
                np.add.at(self.cost[row], at, values)
        self._plan(timeline)
        self.outputs = [b.zeros for b in self.behaviours]
        self.stepped = []  # the members that ran in the last step (the only ones with outputs)
        for k, (c, b) in enumerate(zip(self.cores, self.behaviours)):
            if c.type == CoreType.HOST:
                self.outputs[k] = b.first_output()
                self.stepped.append(k)
        self.sent = self._nonzero_outputs()

    def _plan(self, timeline: Timeline) -> None:
        """Which members act in each step, on which position and in which phase: a CSR by step
        (`timeline.active`). The host acts in its own events' steps (`HostCore.steps`)."""
        steps, members, positions, phases = [], [], [], []
        for k, (c, b) in enumerate(zip(self.cores, self.behaviours)):
            if c.type == CoreType.HOST:
                s = np.asarray(b.steps(), np.int64)
                p = ph = np.zeros(len(s), np.int64)
            else:
                s, p, ph = timeline.active(b.phases())
            steps.append(s)
            members.append(np.full(len(s), k, np.int64))
            positions.append(p)
            phases.append(ph)
        s = np.concatenate(steps)
        order = np.lexsort((np.concatenate(members), s))
        self.plan_ptr = np.searchsorted(s[order], np.arange(timeline.total + 1))
        self.plan = (np.concatenate(members)[order], np.concatenate(positions)[order], np.concatenate(phases)[order])
        self.position_of = np.zeros(len(self.cores), np.int64)  # each member's position in its last step

    def share(self) -> None:
        """Move what a run measures and produces (each member's SOPs, spikes, traffic, chip
        packets; the host's logits and tokens) into shared memory (`shared_zeros`), for a Lava
        worker forked later to write where the process that started it reads."""
        for b in self.behaviours:
            b.sops = _shared_copy(b.sops)
        self.spikes, self.traffic, self.chip_packets = (_shared_copy(a) for a in (self.spikes, self.traffic, self.chip_packets))
        host = self.host()
        if host is not None:
            host.tokens, host.chosen = _shared_copy(host.tokens), _shared_copy(host.chosen)
            host.logits = shared_zeros(host.logits.shape)  # none yet; not copied, so untouched pages stay unallocated

    def resolve_external(self, axon_offset: dict) -> None:
        """Fix the destination axons once every group's layout is known: self.ports lists
        (destination group, its axons these routes reach — sorted group-axon indices, the port's
        slots —, routes) in port order, the routes a CSR by output position of slot indices. A
        port carries only the axons its routes reach, not the whole destination group's.

        axon_offset: core id -> offset of that core's axons in its group's axons.
        """
        self.ports = []
        for group in sorted(self.external):
            routes = self.external[group]
            src = np.concatenate([self.out_slices[k].start + np.asarray(s, np.int64) for k, s, _, _ in routes])
            dst = np.concatenate([axon_offset[dest] + np.asarray(d, np.int64) for _, _, d, dest in routes])
            axons, slot = np.unique(dst, return_inverse=True)
            self.ports.append((group, axons, _csr([src], [slot], self.n_outputs)))

    @staticmethod
    def _deliver(ptr, dst, nz, values, into) -> None:
        """Add each non-zero output's value to every axon its routes reach."""
        np.add.at(into, dst[_entries(ptr, nz)], np.repeat(values, ptr[nz + 1] - ptr[nz]))

    def outgoing(self) -> list:
        """This step's outputs bound for other groups, one vector per port (its slots)."""
        nz, values = self.sent
        out = []
        for _, axons, (ptr, dst) in self.ports:
            v = np.zeros(len(axons), np.int64)
            if len(nz):
                self._deliver(ptr, dst, nz, values, v)
            out.append(v)
        return out

    def step(self, t: int, received=()) -> None:
        """Receive what other groups sent (one vector per `inputs` entry, in its order; their sums
        meet here) and what members sent each other; step the members that act in step t (each
        on its own position)."""
        inbox = np.zeros(self.n_axons, np.int64)
        for (_, axons), v in zip(self.inputs, received):
            inbox[axons] += v
        nz, values = self.sent
        if len(nz):
            self._deliver(self.internal_ptr, self.internal_dst, nz, values, inbox)
        for k in self.stepped:
            self.outputs[k] = self.behaviours[k].zeros
        a, b = (int(self.plan_ptr[t]), int(self.plan_ptr[t + 1])) if t + 1 < len(self.plan_ptr) else (0, 0)
        members, positions, phases = (v[a:b].tolist() for v in self.plan)
        self.stepped = members
        for k, p, ph in zip(members, positions, phases):
            x_k = inbox[self.axon_slices[k]]
            host = self.cores[k].type == CoreType.HOST
            self.outputs[k] = self.behaviours[k].step(t, x_k) if host else self.behaviours[k].step(p, ph, x_k)
            self.position_of[k] = p
        self.sent = self._nonzero_outputs()
        nz = self.sent[0]
        if len(nz):
            member = np.searchsorted(self.out_bounds, nz, side="right") - 1
            position = self.position_of[member]  # an output belongs to the position its core worked on
            np.add.at(self.traffic, position, self.cost[:, nz].T)
            np.add.at(self.spikes, (member, position), 1)
            if len(self.pair_of):
                np.add.at(self.chip_packets, self.pair_of[_entries(self.pair_ptr, nz)], 1)

    def feed(self, position: int, token: int) -> None:
        """Replace the embedding the host sends next (position's first step) by `token`'s: a token
        id from outside (`sdllm.runtime.lava_procs.network`); a no-op in groups without the host."""
        for k, (c, b) in enumerate(zip(self.cores, self.behaviours)):
            if c.type == CoreType.HOST:
                self.outputs[k] = b.feed(position, token)
                self.stepped = sorted({*self.stepped, k})
                self.sent = self._nonzero_outputs()

    def _nonzero_outputs(self):
        """(output positions, values) of this step's non-zero outputs; idle cores are skipped."""
        pos, values = [], []
        for k in self.stepped:
            out, b = self.outputs[k], self.behaviours[k]
            if out is b.zeros:
                continue
            nz = np.flatnonzero(out)
            if len(nz):
                pos.append(nz + self.out_slices[k].start)
                values.append(out[nz])
        if not pos:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(pos), np.concatenate(values)

    def sops(self) -> dict:
        return {c.name: b.sops for c, b in zip(self.cores, self.behaviours) if c.type != CoreType.HOST}

    def core_spikes(self) -> dict:
        return {c.name: self.spikes[k] for k, c in enumerate(self.cores) if c.type != CoreType.HOST}

    def host(self):
        return next((b for c, b in zip(self.cores, self.behaviours) if c.type == CoreType.HOST), None)


def partition(build, granularity: str) -> list:
    """Core ids per group: 'core' (one each), 'chip' (one per chip; the off-chip host simulated
    in the first chip's process, which saves a process and its barrier) or 'all'."""
    if granularity == "all":
        return [[c.id for c in build.cores]]
    if granularity == "core":
        return [[c.id] for c in build.cores]
    chips = {}
    for c in build.cores:
        chips.setdefault(c.chip, []).append(c.id)
    if -1 in chips and len(chips) > 1:
        host = chips.pop(-1)
        chips[min(chips)] = host + chips[min(chips)]
    return [chips[k] for k in sorted(chips)]


def make_groups(build, granularity: str, timeline: Timeline, prompt, sampler=GREEDY) -> list:
    parts = partition(build, granularity)
    group_of = {cid: g for g, ids in enumerate(parts) for cid in ids}
    groups = [CoreGroup(build, ids, group_of, timeline, prompt, sampler) for ids in parts]
    axon_offset = {c.id: s.start for group in groups for c, s in zip(group.cores, group.axon_slices)}
    for group in groups:
        group.resolve_external(axon_offset)
    for g, group in enumerate(groups):
        group.inputs = [(src, axons) for src, other in enumerate(groups) for dest, axons, _ in other.ports if dest == g]
    return groups
