"""The float matrices of an SDLLM's static stages, as a prepared (rotated, gain-folded) float
model holds them: what conversion quantises and fake quantisation writes back."""

import math

import torch

from sdllm import stages
from sdllm.models.source.llama import Llama


def stage_matrices(model: Llama):
    """(node name, tap name of its input, float64 matrix) of every static spike-driven stage of a
    prepared (gain-folded) model, 1/sqrt(d_head) folded into the queries — one at a time, so they
    never all sit in memory."""
    for name, stage, i in stages.static_stages(model.cfg):
        parts = [w / d for w, d in zip(projections(model, stage, i), part_divisors(model.cfg, stage))]
        yield name, stage.input.tap(i), torch.cat(parts).detach().double()


def projections(model: Llama, stage: stages.Stage, layer: int | None) -> list:
    """The float weight parameters a static stage stacks, in its output order."""
    if layer is None:
        return [model.lm_head.weight]
    a, m = model.layers[layer].attn, model.layers[layer].mlp
    return {
        stages.ATTN_IN: lambda: [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
        stages.ATTN_OUT: lambda: [a.o_proj.weight],
        stages.MLP_IN: lambda: [m.gate_proj.weight, m.up_proj.weight],
        stages.MLP_ACT: lambda: [m.down_proj.weight],
    }[stage.input]()


def part_divisors(cfg, stage: stages.Stage) -> list:
    """What each projection is divided by in the stage's matrix: the queries carry 1/sqrt(head_dim)."""
    if stage.input is stages.ATTN_IN:
        return [math.sqrt(cfg.head_dim), 1, 1]
    return [1, 1] if stage.input is stages.MLP_IN else [1]


def entry_bias(model: Llama, layer: int):
    """The bias added after the layer's entry stage (Qwen2's q/k/v biases), zeros without one."""
    a = model.layers[layer].attn
    if a.q_proj.bias is None:
        return torch.zeros(a.q_proj.out_features + 2 * a.k_proj.out_features, dtype=torch.float64)
    return torch.cat([a.q_proj.bias / math.sqrt(model.cfg.head_dim), a.k_proj.bias, a.v_proj.bias]).detach().double()
