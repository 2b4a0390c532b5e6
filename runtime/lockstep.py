"""A single-process lockstep simulator of a build: every core in one group (`runtime.group`),
the same behaviours and routing tables as the Lava graph, without Lava's per-process barrier.
The prompt's positions enter every `Schedule.interval` steps (layer pipelining), generated tokens
a period apart. (The fast backend, `runtime.fast`, runs the same build without stepping it.)"""


from sdllm.runtime.generation import Generation
from sdllm.runtime.group import make_groups, packets_by_pair
from sdllm.runtime.result import RunResult
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline


def run_lockstep(build, prompt, n_new: int, sampler=GREEDY, eos_id=None, on_token=None, pipelined: bool = True) -> RunResult:
    n_positions = len(prompt) + n_new - 1
    timeline = Timeline.of(build.schedule, len(prompt), n_positions, pipelined)
    (group,) = make_groups(build, "all", timeline, prompt, sampler)
    generation = Generation(len(prompt), eos_id, on_token)
    host = group.host()
    done = n_positions
    for t in range(timeline.total):
        group.step(t)
        position = host.done(t)
        if position is not None and generation.produced(position, host.tokens[position + 1]):
            done = position + 1
            break
    return RunResult(tokens=[int(t) for t in host.tokens[: done + 1]], logits=host.logits[:done],
                     core_sops={k: v[:done] for k, v in group.sops().items()}, timesteps=timeline.done(done - 1),
                     traffic=group.traffic[:done], core_spikes={k: v[:done] for k, v in group.core_spikes().items()},
                     chip_packets=packets_by_pair(build, group.chip_packets))
