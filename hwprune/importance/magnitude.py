"""Criteria that read the weights alone: l2, l1, bn (BatchNorm scales) and random (a control)."""
from __future__ import annotations

import numpy as np
import torch

from .registry import ScoreContext, accumulate, criterion


@criterion("l2", summary="sqrt of the sum of squares of every weight a channel owns, over the group")
def l2(ctx: ScoreContext):
    return [np.sqrt(s) for s in accumulate(ctx.graph, ctx.tensors, ctx.graph.param_slots, 2)]


@criterion("l1", summary="sum of |w| of every weight a channel owns, over the group")
def l1(ctx: ScoreContext):
    return accumulate(ctx.graph, ctx.tensors, ctx.graph.param_slots, 1)


@criterion("bn", summary="sum of |gamma| of the group's batch-norm scales (l2 where it has none)")
def bn_scale(ctx: ScoreContext):
    gammas = _bn_weights(ctx.graph)
    bn = accumulate(ctx.graph, ctx.tensors, [s for s in ctx.graph.param_slots if s[0] in gammas], 1)
    fallback = l2(ctx)
    return [b if b.any() else f for b, f in zip(bn, fallback)]


@criterion("random", summary="seeded uniform draws: a control")
def random(ctx: ScoreContext):
    rng = ctx.rng
    return [rng.random(g.width) for g in ctx.graph.groups]


def _bn_weights(graph) -> set:
    ops = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default}
    out = set()
    for n in graph.traced.graph.nodes:
        if n.op == "call_function" and n.target in ops and len(n.args) > 1:
            if isinstance(n.args[1], torch.fx.Node):
                out.add(n.args[1].name)
    return out
