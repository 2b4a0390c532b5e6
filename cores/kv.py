"""KV cores: dynamic synapses holding the KV cache of a group of query heads (one layer's Q·Kᵀ
stage, `kv_qk`, or P·V stage, `kv_pv`). Tiling cuts a stage by query heads into the fewest
groups whose caches (dense: every position of every head, a weight per entry and a pointer per
spike axon) fit a core.

Dynamics. At the phase the unit writes the token's keys (or values) — graded, kv-bit integers
on the write axons — the core stores them at the token's position p: C[kv head, p] ← x_write.
In each step t of its stage's window it receives spikes s_t and updates

    Q·Kᵀ:  a[h, p'] ← r · a[h, p'] + Σ_d s_t[h, d] · K[g(h), p', d]      (heads × positions)
    P·V:   a[h, d]  ← r · a[h, d]  + Σ_p' s_t[h, p'] · V[g(h), p', d]    (heads × head_dim)

(g(h): the kv head of query head h; r: the code's radix; p' over the cached positions of p's own
sequence, f ≤ p' ≤ p — a batch holds several sequences side by side, `sdllm.schedule.Timeline`);
at the window's last phase it sends a and resets it. SOPs per spike (the stage table's rule,
`stages.Stage.fanout`): p − f + 1 cached keys for Q·Kᵀ, head_dim values for P·V. Its output is bounded by Q_in · Q_kv · (head_dim or the context).
"""

import numpy as np

from sdllm import stages
from sdllm.cores.core import Core
from sdllm.cores.stepping import CoreBehaviour, StageWindow, check_events
from sdllm.errors import SdllmError
from sdllm.models.integer import fixedpoint as fx
from sdllm.stages import NodeKind


def _kv_bits(n_heads: int, n_spike_axons: int, a: dict, lim) -> int:
    """A KV core's cache is dense (every position of every head): a weight per entry, a pointer per spike axon."""
    return n_heads * a["max_seq_len"] * a["head_dim"] * a["weight_bits"] + n_spike_axons * lim.axon_overhead_bits


def _kv_tiles(node, lim):
    a = node.attrs
    nh, hd, S, group = a["n_heads"], a["head_dim"], a["max_seq_len"], a["n_heads"] // a["n_kv_heads"]
    per_head_axons = hd if node.kind is NodeKind.KV_QK else S
    per_head_out = S if node.kind is NodeKind.KV_QK else hd
    for n_s in range(1, nh + 1):
        if nh % n_s:
            continue
        k = nh // n_s
        if _kv_bits(k, k * per_head_axons, a, lim) > lim.synapse_memory_bits or k * per_head_out > lim.max_neurons:
            continue
        tiles = []
        for h0 in range(0, nh, k):
            g0, g1 = h0 // group, (h0 + k - 1) // group + 1
            spikes = np.arange(h0 * per_head_axons, (h0 + k) * per_head_axons)
            write = nh * per_head_axons + np.arange(g0 * hd, g1 * hd)
            tiles.append((np.concatenate([spikes, write]), np.arange(h0 * per_head_out, (h0 + k) * per_head_out), h0, k, g0))
        if max(len(t[0]) for t in tiles) <= lim.max_input_axons:
            return tiles
    raise SdllmError(
        f"stage {node.name}: one head's KV cache needs {_kv_bits(1, per_head_axons, a, lim)} synapse bits "
        f"and {per_head_axons + hd} axons, a core holds {lim.synapse_memory_bits} bits and {lim.max_input_axons} axons"
    )


def tile(node, lim, q_max: int, first_id: int):
    """(cores, lower bound) of a KV stage: its head groups."""
    a = node.attrs
    kv_max = fx.qmax(a["weight_bits"])  # the cached keys or values are its weights
    per_head = a["head_dim"] if node.kind is NodeKind.KV_QK else a["max_seq_len"]
    cores = []
    for axons, neurons, h0, k, g0 in _kv_tiles(node, lim):
        cores.append(Core(
            first_id + len(cores), f"{node.name}[h{h0}:{h0 + k}]", stages.CORE_TYPE[node.kind], node.name, node.layer,
            axons, neurons,
            synapse_bits=_kv_bits(k, k * per_head, a, lim),
            synapse_entries=k * a["max_seq_len"] * a["head_dim"],
            params={"n_heads": k, "head_dim": a["head_dim"], "max_seq_len": a["max_seq_len"],
                    "group": a["n_heads"] // a["n_kv_heads"], "kv_head0": g0, "head0": h0,
                    "n_spike_axons": k * per_head, "weight_bits": a["weight_bits"]},
            payload_bound=q_max * kv_max * per_head,
        ))
    bound = max(1, -(-_kv_bits(a["n_heads"], a["n_heads"] * per_head, a, lim) // lim.synapse_memory_bits))
    return cores, bound, None  # an event's fan-out depends on the position: the stage table's rule


class KvCore(StageWindow, CoreBehaviour):
    def __init__(self, core, build, timeline):
        CoreBehaviour.__init__(self, core, build, timeline)
        StageWindow.__init__(self, core, build)
        p = core.params
        self.h, self.hd, self.S, self.n_spike = p["n_heads"], p["head_dim"], p["max_seq_len"], p["n_spike_axons"]
        n_kv = (core.n_axons - self.n_spike) // self.hd
        self.cache = np.zeros((n_kv, self.S, self.hd), np.int64)
        self.kv_of_head = (p["head0"] + np.arange(self.h)) // p["group"] - p["kv_head0"]
        stage = self.stage = stages.stage_of(core.node)
        self.cfg = build.config
        # the unit sends the cache writes with the accumulators' program of the stage that produces them
        self.write_at = build.schedule.layers[core.layer].emit[stages.producer_index(stage.cache) + 1] + 1
        self.qk = stage.kind is NodeKind.KV_QK
        self.acc = np.zeros(core.n_neurons, np.int64)

    def phases(self) -> set:
        return StageWindow.phases(self) | {self.write_at}

    def step(self, token, phase, x):
        if phase == self.write_at:
            self.cache[:, token] = x[self.n_spike :].reshape(-1, self.hd)
        if self.first <= phase <= self.last:
            s = x[: self.n_spike]
            check_events(self.core, s, self.event_max)
            seq = slice(int(self.seq_first[token]), token + 1)  # the cached positions of its own sequence so far
            mem = self.cache[self.kv_of_head, seq]  # (heads, positions, hd)
            if self.radix != 1:
                self.acc *= self.radix
            if self.qk:
                self.acc.reshape(self.h, self.S)[:, seq] += np.einsum("hd,htd->ht", s.reshape(self.h, self.hd), mem)
            else:
                self.acc += np.einsum("ht,htd->hd", s.reshape(self.h, self.S)[:, seq], mem).reshape(-1)
            self.sops[token] += int(np.count_nonzero(s)) * self.stage.fanout(self.cfg, pos=token - seq.start)
            if phase == self.last:
                out, self.acc = self.acc, np.zeros_like(self.acc)
                return out
        return self.zeros
