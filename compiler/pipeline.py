"""The compiler: a list of passes, each a function from one IR to the next (testable alone)."""

from sdllm.compiler import drc, hw, lower, place, route, schedule, tile
from sdllm.compiler.ir import Network
from sdllm.models import checkpoint

PASSES = (lower.lower, tile.tile, place.place, route.route, schedule.schedule, drc.check)


def compile_model(blob: dict, target: str, passes=PASSES) -> Network:
    net = Network(blob=blob, hw=hw.load(target))
    for p in passes:
        net = p(net)
    return net


def compile_file(model_path: str, target: str) -> Network:
    return compile_model(checkpoint.load(model_path), target)
