"""Pass schedule: the timestep schedule (docs/DESIGN.md §3: a value computed in step t is received in step t+1).

Per token position, in phases 0..period-1. A layer's unit receives its residual at phase r and emits the
spike train of stage k during phases e_k .. e_k+T_k-1 (e_0 = r; T_k the window of the stage's
input point in its code, `QuantSpec.window`); the stage's cores receive those spikes at
e_k+1 .. e_k+T_k and send their accumulators at e_k+T_k, which reach the unit at
e_{k+1} = e_k + T_k + 1 — or, for a stage whose fan-in is split, reach its reduce cores then,
which send the sums on, to reach the unit one step later. Stages in the order of the stage table
(`sdllm.stages.LAYER`); the unit adds the last result to the residual at e_6 and hands it on (next unit at
e_6 + 1, or the LM head's spikes). The host sends the token's embedding to arrive at phase 0
and receives the logits at the last phase, where it picks the next token. Positions whose tokens
are known enter every `interval` steps, the longest layer's span (`sdllm.schedule`). Adds `schedule`.
"""

from sdllm import codes, stages
from sdllm.compiler.ir import Network
from sdllm.schedule import HostPhases, LayerPhases, Schedule, Window, widest_span
from sdllm.stages import CoreType


def schedule(net: Network) -> Network:
    net.need("schedule", "cores", "codes")
    reduced = sorted({c.node for c in net.cores if c.type == CoreType.REDUCE})
    return net.add("schedule", schedule=timestep_schedule(net.model.quant, net.model.config.n_layers, net.codes.codes, reduced))


def timestep_schedule(spec, n_layers: int, code_of: dict, reduced=()) -> Schedule:
    """The schedule for the spike trains of `spec`'s points, each stage's input in its code
    (code_of: stage node -> code); `reduced`: the stages with reduce cores (one more step each)."""
    layers, windows = [], {}

    def steps(stage, layer):
        return codes.steps(code_of[stage.node(layer)], spec.of_stage(stage.node(layer)).bits)

    def window(stage, layer, first):
        return Window(first, first + steps(stage, layer) - 1, code_of[stage.node(layer)])

    r = 0
    for i in range(n_layers):
        emits = [r]
        for stage in stages.LAYER:
            emits.append(emits[-1] + steps(stage, i) + 1 + (stage.node(i) in reduced))
        layers.append(LayerPhases(r, tuple(emits)))
        for k, stage in enumerate(stages.LAYER):
            windows[stage.node(i)] = window(stage, i, emits[k] + 1)
        r = emits[-1] + 1
    head_emit = layers[-1].emit[-1]
    windows[stages.HEAD.name] = window(stages.HEAD, None, head_emit + 1)
    period = windows[stages.HEAD.name].last + 2 + (stages.HEAD.name in reduced)
    interval = widest_span(tuple(layers), windows[stages.HEAD.name])
    return Schedule(period, tuple(layers), windows, tuple(reduced), HostPhases(0, head_emit + 1, period - 1), interval)
