"""Energy and latency per token from the hw config's constants (an estimate, not a measurement),
and beside it the 45 nm arithmetic estimate spiking-LLM papers use, on the same tokens.

45 nm energies [H14]: M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, Fig. 1.1.9 — add: 8-bit int 0.03 pJ, 32-bit int 0.1 pJ, 16-bit float 0.4 pJ,
32-bit float 0.9 pJ; multiply: 8-bit int 0.2 pJ, 16-bit float 1.1 pJ, 32-bit float 3.7 pJ;
memory: an 8 KB SRAM 64-bit read 10 pJ, DRAM 1.3–2.6 nJ per 64 bits.

  SDLLM      a binary synaptic op is an accumulate at E_AC = 0.9 pJ (the paper's convention, a
             32-bit float add); a graded one also multiplies the weight by its up-to-8-bit
             payload: E_AC + an 8-bit multiply (assumption: [H14]'s 8-bit int multiply). Beside
             it, the same ops as the integer adds a chip's synapses do: a 32-bit int add [H14]
             (+ the 8-bit multiply for a graded op).
  dense      the same model run densely (`dense_macs`) at FP32 (the paper's convention), FP16 and
             INT8 MACs; and the same W4A4 network as an integer ANN — its integers multiplied
             densely: an 8-bit multiply and a 32-bit accumulate per MAC (assumption: [H14] has no
             4-bit figure; an 8-bit multiplier bounds a 4-bit one).
  weights    what a dense accelerator pays per token to read every weight once (batch 1) from
             SRAM or from DRAM; a neuromorphic chip holds its weights in its cores' synapses.
"""

import numpy as np

from sdllm import stages
from sdllm.stages import CoreType

E_AC_45NM_PJ = 0.9  # [H14] 32-bit float add: SDLLM's and earlier spiking-LLM papers' E_AC
E_MUL8_45NM_PJ = 0.2  # [H14] 8-bit int multiply
E_ADD32_INT_45NM_PJ = 0.1  # [H14] 32-bit int add
E_GRADED_45NM_PJ = E_AC_45NM_PJ + E_MUL8_45NM_PJ  # assumption: an accumulate and an 8-bit multiply
E_MAC_45NM_PJ = 0.9 + 3.7  # [H14] 32-bit float add + multiply: the papers' E_MAC
E_MAC_FP16_45NM_PJ = 0.4 + 1.1  # [H14] 16-bit float add + multiply
E_MAC_INT8_45NM_PJ = 0.03 + 0.2  # [H14] 8-bit int add + multiply
E_MAC_INT_ANN_45NM_PJ = 0.1 + 0.2  # assumption: an 8-bit multiply [H14] bounding 4-bit, a 32-bit int accumulate [H14]
E_SRAM_BYTE_45NM_PJ = 10 / 8  # [H14] 8 KB SRAM, 64-bit read: 10 pJ
E_DRAM_BYTE_45NM_PJ = 1300 / 8  # [H14] DRAM, 64-bit access: 1.3 nJ (the low end of 1.3-2.6)


def dense_macs(cfg, n_positions: int) -> np.ndarray:
    """Multiply-accumulates per position of the same model run densely (an ANN): every weight of
    every static stage once, plus Q·Kᵀ and P·V over the keys so far."""
    static = sum(n_out * n_in for n_out, n_in in stages.static_shapes(cfg).values())
    attention = 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    return static + attention * (np.arange(n_positions) + 1)


def graded_stages(build) -> set:
    """The stages whose inputs the build carries in graded spikes (each synaptic op a multiply)."""
    return {name for name, w in build.schedule.stages.items() if w.code == "graded"}


def estimate(build, result) -> dict:
    """Per position: SOP energy (binary and graded ops at their constants) + neuron-update energy
    + NoC energy, latency from the step time, and the 45 nm estimate beside it.

    Neuron updates: every neuron of a synapse or KV core updates once per step of its stage's
    window (its input's train: T steps per token; for plane codes the update also doubles the
    accumulator), a reduce core's once per token; units and the host are not counted. NoC: every
    packet (spike or graded payload) costs the in-tile spike energy, plus the per-hop energy per
    mesh hop, plus the chip-crossing energy when it leaves its chip; host I/O is not counted.
    """
    e = build.hw.energy
    windows = build.schedule.stages
    graded = graded_stages(build)
    by_core = {c.name: c.node for c in build.cores}
    per_core = {k: np.asarray(v, float) for k, v in result.core_sops.items()}
    graded_sops = sum((v for k, v in per_core.items() if by_core[k] in graded), np.zeros(1)).mean()
    sops = result.sops_per_token().astype(float)
    binary_sops = float(sops.mean()) - float(graded_sops)
    neuron_updates = sum(c.n_neurons * windows[c.node].steps
                         for c in build.cores if c.type in stages.SYNAPTIC_CORES)
    neuron_updates += sum(c.n_neurons for c in build.cores if c.type == CoreType.REDUCE)
    sop_nj = (binary_sops * e["sop_pj"] + graded_sops * e.get("graded_sop_pj", 0.0)) / 1e3
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
        "binary_sops_per_token": binary_sops,
        "graded_sops_per_token": float(graded_sops),
        "neuron_updates_per_token": neuron_updates,
        "sop_energy_nj": sop_nj,
        "neuron_energy_nj": neuron_nj,
        "energy_per_token_uj": (sop_nj + neuron_nj + noc_nj) / 1e3,
        "latency_per_token_ms": build.schedule.period * build.hw.timestep_us / 1e3,
        "prompt_interval_ms": build.schedule.interval * build.hw.timestep_us / 1e3,
        **paper_estimate(binary_sops, float(graded_sops), float(dense_macs(build.config, len(sops)).mean()),
                         weight_bytes(build.config, build.quant.weight_bits)),
    }


def weight_bytes(cfg, weight_bits: int) -> float:
    """Bytes of every static stage's weights at weight_bits each: what a dense accelerator reads per token."""
    return sum(n_out * n_in for n_out, n_in in stages.static_shapes(cfg).values()) * weight_bits / 8


def paper_estimate(binary_sops: float, graded_sops: float, macs: float, weights: float) -> dict:
    """The 45 nm estimate: the SDLLM's synaptic ops against the dense model's MACs, and the
    weight traffic of a dense accelerator (module docstring)."""
    return {
        "dense_macs_per_token": macs,
        "sdllm_45nm_uj": (binary_sops * E_AC_45NM_PJ + graded_sops * E_GRADED_45NM_PJ) / 1e6,
        "sdllm_int_45nm_uj": (binary_sops * E_ADD32_INT_45NM_PJ + graded_sops * (E_ADD32_INT_45NM_PJ + E_MUL8_45NM_PJ)) / 1e6,
        "dense_fp32_45nm_uj": macs * E_MAC_45NM_PJ / 1e6,
        "dense_fp16_45nm_uj": macs * E_MAC_FP16_45NM_PJ / 1e6,
        "dense_int8_45nm_uj": macs * E_MAC_INT8_45NM_PJ / 1e6,
        "integer_ann_45nm_uj": macs * E_MAC_INT_ANN_45NM_PJ / 1e6,
        "weight_bytes_per_token": weights,
        "weights_sram_45nm_uj": weights * E_SRAM_BYTE_45NM_PJ / 1e6,
        "weights_dram_45nm_uj": weights * E_DRAM_BYTE_45NM_PJ / 1e6,
    }
