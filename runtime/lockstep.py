"""A single-process lockstep simulator of a build: every core in one group (`runtime.group`),
the same behaviours and routing tables as the Lava graph, without Lava's per-process barrier.
The prompt's positions enter every `Schedule.interval` steps (layer pipelining), generated tokens
a period apart; a batch's sequences share the pipeline (`sdllm.schedule.Timeline`). (The fast
backend, `runtime.fast`, runs the same build without stepping it.)"""


from sdllm.runtime.generation import Generation, Generations
from sdllm.runtime.group import make_groups, packets_by_pair
from sdllm.runtime.result import RunResult, per_sequence
from sdllm.runtime.sampling import GREEDY
from sdllm.schedule import Timeline


def run_lockstep(build, prompt, n_new: int, sampler=GREEDY, eos_id=None, on_token=None, pipelined: bool = True) -> RunResult:
    (result,) = run_lockstep_batch(build, [prompt], n_new, sampler, [Generation(len(prompt), eos_id, on_token)], pipelined)
    return result


def run_lockstep_batch(build, prompts: list, n_new: int, sampler=GREEDY, generations: list | None = None,
                       pipelined: bool = True) -> list:
    """Each prompt's `RunResult`, its sequence run beside the others in one pipeline."""
    timeline = Timeline.batch(build.schedule, [len(p) for p in prompts], n_new, pipelined)
    (group,) = make_groups(build, "all", timeline, [t for p in prompts for t in p], sampler)
    ending = Generations(timeline, generations or [Generation(len(p)) for p in prompts])
    host = group.host()
    for t in range(timeline.total):
        group.step(t)
        position = host.done(t)
        if position is not None and timeline.samples(position) and ending.produced(position, host.chosen[position]):
            break
    return per_sequence(timeline, prompts, ending.kept, host.chosen, host.logits, group.sops(), group.traffic,
                        group.core_spikes(), packets_by_pair(build, group.chip_packets))
