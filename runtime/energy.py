"""Energy and latency per token from the hw config's constants (an estimate, not a measurement)."""


def estimate(build, result) -> dict:
    """Per position: SOP energy + neuron-update energy + NoC energy, and latency from the step time.

    Neuron updates: every neuron of a synapse or KV core updates once per step of its stage's
    spike window (T steps per token); units and the host are not counted. NoC: every packet
    (spike or graded payload) costs the in-tile spike energy, plus the per-hop energy per mesh
    hop, plus the chip-crossing energy when it leaves its chip; host I/O is not counted.
    """
    e = build.doc["hw"]["energy"]
    T = build.schedule["timesteps_per_spike_train"]
    neurons = sum(c.n_neurons for c in build.cores if c.type in ("synapse", "kv_qk", "kv_pv"))
    sops = result.sops_per_token().astype(float)
    neuron_updates = neurons * T
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
        "latency_per_token_ms": build.schedule["period"] * float(build.doc["hw"]["timing"]["timestep_us"]) / 1e3,
    }
