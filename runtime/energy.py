"""Energy and latency per token from the hw config's constants (an estimate, not a measurement),
and beside it the 45 nm arithmetic estimate spiking-LLM papers use, for the same tokens.

45 nm energies: M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, Fig. 1.1.9: 32-bit float add 0.9 pJ, multiply 3.7 pJ (so a MAC 4.6 pJ: the E_AC and
E_MAC that SDLLM and earlier spiking-LLM papers use); 16-bit float add 0.4 pJ, multiply 1.1 pJ.
"""

import numpy as np

from sdllm import stages
from sdllm.stages import CoreType

E_AC_45NM_PJ = 0.9
E_MAC_45NM_PJ = 0.9 + 3.7
E_MAC_FP16_45NM_PJ = 0.4 + 1.1


def dense_macs(cfg, n_positions: int) -> np.ndarray:
    """Multiply-accumulates per position of the same model run densely (an ANN): every weight of
    every static stage once, plus Q·Kᵀ and P·V over the keys so far."""
    static = sum(n_out * n_in for n_out, n_in in stages.static_shapes(cfg).values())
    attention = 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    return static + attention * (np.arange(n_positions) + 1)


def estimate(build, result) -> dict:
    """Per position: SOP energy + neuron-update energy + NoC energy, and latency from the step time.

    Neuron updates: every neuron of a synapse or KV core updates once per step of its stage's
    spike window (its input's train: T steps per token; for bit planes the update also doubles
    the accumulator), a reduce core's once per token; units and the host are
    not counted. NoC: every packet
    (spike or graded payload) costs the in-tile spike energy, plus the per-hop energy per mesh
    hop, plus the chip-crossing energy when it leaves its chip; host I/O is not counted.
    """
    e = build.hw.energy
    windows = build.schedule.stages
    sops = result.sops_per_token().astype(float)
    neuron_updates = sum(c.n_neurons * windows[c.node].steps
                         for c in build.cores if c.type in stages.SYNAPTIC_CORES)
    neuron_updates += sum(c.n_neurons for c in build.cores if c.type == CoreType.REDUCE)
    sop_nj = sops.mean() * e["sop_pj"] / 1e3
    neuron_nj = neuron_updates * e["neuron_update_pj"] / 1e3
    noc_nj = 0.0
    packets = hops = crossings = float("nan")
    if result.traffic is not None:
        packets, hops, crossings = result.traffic.astype(float).mean(axis=0)
        noc_nj = (packets * e["spike_in_tile_pj"] + hops * e["hop_pj"] + crossings * e["chip_crossing_pj"]) / 1e3
    return {
        "packets_per_token": packets,
        "packet_hops_per_token": hops,
        "chip_crossings_per_token": crossings,
        "noc_energy_nj": noc_nj,
        "sops_per_token": float(sops.mean()),
        "neuron_updates_per_token": neuron_updates,
        "sop_energy_nj": sop_nj,
        "neuron_energy_nj": neuron_nj,
        "energy_per_token_uj": (sop_nj + neuron_nj + noc_nj) / 1e3,
        "latency_per_token_ms": build.schedule.period * build.hw.timestep_us / 1e3,
        **paper_estimate(float(sops.mean()), float(dense_macs(build.config, len(sops)).mean())),
    }


def paper_estimate(sops: float, macs: float) -> dict:
    """The 45 nm estimate: SOPs x E_AC for the SDLLM against the dense model's MACs (FP32 and FP16)."""
    return {
        "dense_macs_per_token": macs,
        "sdllm_45nm_uj": sops * E_AC_45NM_PJ / 1e6,
        "dense_fp32_45nm_uj": macs * E_MAC_45NM_PJ / 1e6,
        "dense_fp16_45nm_uj": macs * E_MAC_FP16_45NM_PJ / 1e6,
    }
