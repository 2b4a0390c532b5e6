"""The compiler: a list of passes, each a function from one IR to the next (testable alone)."""

from functools import partial

from sdllm.compiler import drc, hw, lower, place, rates, route, schedule, tile
from sdllm.compiler.ir import Network
from sdllm.models import checkpoint

PASSES = (lower.lower, tile.tile, route.route, place.place, schedule.schedule, drc.check)


def passes(placement: str = "traffic", progress: bool = False) -> tuple:
    return (lower.lower, partial(tile.tile, progress=progress), partial(route.route, progress=progress),
            partial(place.place, method=placement, progress=progress), schedule.schedule, drc.check)


def compile_model(blob: dict, target: str, passes=PASSES, rate_tokens: int = 0) -> Network:
    """rate_tokens > 0: measure the units' spike rates on that many tokens of calibration text
    (the integer reference) to weight placement; else count one packet per routed value."""
    net = Network(blob=blob, hw=hw.load(target))
    if rate_tokens > 0 and "synthetic" not in blob:
        net.rates, net.rates_tokens = rates.measure(blob, rate_tokens), min(rate_tokens, blob["config"]["max_seq_len"])
    for p in passes:
        net = p(net)
    return net


def compile_file(model_path: str, target: str, **options) -> Network:
    return compile_model(checkpoint.load(model_path), target, **options)
