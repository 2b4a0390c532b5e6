"""The compiler: a list of passes, each a function from one IR to the next (testable alone).

Each pass reads fields that earlier passes filled and adds its own (`sdllm.compiler.ir`); it
never changes its input, so the pipeline run twice on the same model gives the same network.
`emit` then writes the build directory from the finished network.
"""

from functools import partial

from sdllm.compiler import code_choice, drc, lower, place, rates, route, schedule, tile
from sdllm.compiler.ir import Network
from sdllm.formats import hw
from sdllm.formats.model import ModelFile

RATE_TOKENS = 128


def passes(placement: str = "traffic", rate_tokens: int = 0, progress: bool = False, code: str = "auto") -> tuple:
    """The pass list. rate_tokens > 0: measure the units' spike rates on that many tokens of
    calibration text (the integer reference) to weigh the codes and placement; else inputs spread
    evenly over their range and one packet per routed value. code: the compiler's choice per
    stage ('auto'), the paper's ternary trains ('paper') or one code everywhere."""
    return (
        lower.lower,
        partial(tile.tile, progress=progress),
        partial(route.route, progress=progress),
        partial(rates.rates, n_tokens=rate_tokens),
        partial(code_choice.choose, code=code),
        partial(place.place, method=placement, progress=progress),
        schedule.schedule,
        drc.check,
    )


PASSES = passes()


def compile_model(model: ModelFile, target: str, passes=PASSES) -> Network:
    """Run the passes on a fresh Network of the model and the target (a name in hw_configs/ or a YAML path)."""
    net = Network(model=model, hw=hw.load(target))
    for p in passes:
        net = p(net)
    return net
