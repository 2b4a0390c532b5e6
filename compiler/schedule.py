"""Pass 5: the timestep schedule (DESIGN §3: a value computed in step t is received in step t+1).

Per token, in phases 0..period-1. A layer's unit receives its residual at phase r and emits the
spike train of stage k during phases e_k .. e_k+T-1 (e_0 = r); the stage's cores receive those
spikes at e_k+1 .. e_k+T and send their accumulators at e_k+T, which reach the unit at
e_{k+1} = e_k + T + 1 — or, for a stage whose fan-in is split, reach its reduce cores then,
which send the sums on, to reach the unit one step later. Stages in the order of the stage table
(`sdllm.stages.LAYER`); the unit adds the last result to the residual at e_6 and hands it on (next unit at
e_6 + 1, or the LM head's spikes). The host sends the token's embedding to arrive at phase 0
and receives the logits at the last phase, where it picks the next token. Adds `schedule`.
"""

from sdllm import stages
from sdllm.compiler.ir import Network
from sdllm.models import fixedpoint as fx
from sdllm.stages import CoreType


def schedule(net: Network) -> Network:
    net.need("schedule", "cores")
    T = fx.qmax(net.model.quant.act_bits)
    reduced = sorted({c.node for c in net.cores if c.type == CoreType.REDUCE})
    return net.add("schedule", schedule=timestep_schedule(T, net.model.config.n_layers, reduced))


def timestep_schedule(T: int, n_layers: int, reduced=()) -> dict:
    """The schedule for spike trains of T steps (T = 1: every train collapsed to its counts);
    `reduced`: the stages with reduce cores (one more step each)."""
    layers, windows = [], {}
    r = 0
    for i in range(n_layers):
        emits = [r]
        for stage in stages.LAYER:
            emits.append(emits[-1] + T + 1 + (stage.node(i) in reduced))
        layers.append({"resid_in": r, "emit": emits})
        for k, stage in enumerate(stages.LAYER):
            windows[stage.node(i)] = {"first": emits[k] + 1, "last": emits[k] + T}
        r = emits[-1] + 1
    head_emit = layers[-1]["emit"][-1]
    windows[stages.HEAD.name] = {"first": head_emit + 1, "last": head_emit + T}
    period = head_emit + T + 2 + (stages.HEAD.name in reduced)
    return {
        "timesteps_per_spike_train": T,
        "period": period,
        "layers": layers,
        "stages": windows,
        "reduced": list(reduced),
        "host": {"embed_arrives": 0, "ratio_arrives": head_emit + 1, "logits_arrive": period - 1},
    }
