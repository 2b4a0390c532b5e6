"""A step-by-step record of one token's period: what every core sent in each timestep, and the
spikes of one neuron unit — the raster of the run report.

Recorded by replaying the run's tokens in the lockstep simulator (`runtime.group`, every core in
one group) up to the traced position: the same behaviours and routing tables as the Lava graph,
bit-identical to every backend (tests/test_lava.py), so the raster is the run's.
"""

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from sdllm import stages
from sdllm.runtime.group import make_groups
from sdllm.schedule import Timeline
from sdllm.stages import CoreType


@dataclass
class TokenTrace:
    position: int  # the traced token's position
    cores: list  # core names, in build order (the host left out)
    sent: np.ndarray  # (cores, period): non-zero outputs (spikes, graded payloads) each core sent per step
    unit: str  # the neuron unit whose spikes `spikes` holds
    spikes: np.ndarray  # (events, 3): step, output index, sign (+1/-1) of each spike the unit sent
    unit_segments: dict  # output segment name -> (start, stop) of the unit's outputs


def trace_token(build, tokens, position: int, unit_layer: int = 0, progress: bool = False) -> TokenTrace:
    """Replay tokens[:position + 1] and record the period of `position`."""
    period = build.schedule.period
    # positions one after another, a period each: the traced position's period is its alone
    timeline = Timeline.of(build.schedule, position + 1, position + 1, pipelined=False)
    (group,) = make_groups(build, "all", timeline, list(tokens[: position + 1]))
    keep = [k for k, c in enumerate(group.cores) if c.type != CoreType.HOST]
    unit = next(k for k, c in enumerate(group.cores) if c.type == CoreType.NEURON_UNIT and c.layer == unit_layer)
    unit_out = group.out_slices[unit]
    segments = build.segments(group.cores[unit].node, "outputs")
    trains = {s.name for s in stages.LAYER} | {stages.HEAD.name}  # the segments that carry spike trains
    is_spike = np.zeros(unit_out.stop - unit_out.start, bool)
    for seg, (a, b) in segments.items():
        is_spike[a:b] = seg in trains
    sent = np.zeros((len(group.cores), period), np.int64)
    events = []
    for t in tqdm(range((position + 1) * period), desc="raster replay", unit="step", disable=None if progress else True,
                  leave=False):
        group.step(t)
        if t >= position * period:
            phase = t - position * period
            nz, values = group.sent
            sent[:, phase] = np.diff(np.searchsorted(nz, group.out_bounds))
            mine = (nz >= unit_out.start) & (nz < unit_out.stop)
            at, v = nz[mine] - unit_out.start, values[mine]
            spike = is_spike[at]
            events.append(np.stack([np.full(int(spike.sum()), phase), at[spike], v[spike]], axis=1))
    name = group.cores[unit].name
    return TokenTrace(position=position, cores=[group.cores[k].name for k in keep], sent=sent[keep], unit=name,
                      spikes=np.concatenate(events).astype(np.int64) if events else np.zeros((0, 3), np.int64),
                      unit_segments={k: v for k, v in segments.items() if k in trains})
