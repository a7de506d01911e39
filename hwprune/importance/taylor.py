"""Loss-based criteria: first-order Taylor and the leave-one-out oracle it approximates.

taylor (Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019):
removing channel c zeroes every parameter element it owns in every member of its group (the
set S_c that the cut slices away: the filter, its BN scale and shift, the input slice of each
consumer). To first order the loss changes by dL = -sum_{w in S_c} g_w * w. Per calibration
batch b this is squared, averaged over the batches, and the square root taken:
    taylor_c = sqrt(mean_b (sum_{w in S_c} g_w,b * w)^2),
the RMS first-order loss change: in loss units, one unit for every group.

loss_change: the oracle, exact where Taylor is first order: the channel zeroed wherever it is
consumed (mask equivalence, on the traced graph) and the mean loss over the calibration
batches measured again: |L(without c) - L|. One pass over the data per channel: for small
models and to test the other criteria against.

The loss is hwprune.importance.loss's (the user's loss_fn, distillation from a teacher, or
the label-free default).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..verify import tensors_of
from .registry import Needs, ScoreContext, accumulate, criterion
from .fisher import prunable_labels
from .loss import GraphLoss, gradients_on


@criterion("taylor", Needs.LOSS, across_groups=True,
           summary="first-order Taylor: RMS over batches of |sum of g*w| over every parameter a channel owns")
def taylor(ctx: ScoreContext) -> list:
    graph, loss = ctx.graph, GraphLoss(ctx)
    named = tensors_of(ctx.model)
    names = sorted({fqn for _, _, fqn in graph.param_slots
                    if isinstance(named.get(fqn), nn.Parameter) and named[fqn].is_floating_point()})
    params = [named[n] for n in names]
    total = [np.zeros(g.width) for g in graph.groups]
    n = len(ctx.calibration)
    with gradients_on(params), torch.enable_grad():
        for i in range(n):
            grads = torch.autograd.grad(loss(i, loss.base_masks), params, allow_unused=True)
            gw = {name: g * p for name, g, p in zip(names, grads, params) if g is not None}
            for t, s in zip(total, accumulate(graph, gw, graph.param_slots, None)):
                t += s ** 2
            if ctx.progress is not None:
                ctx.progress("score", i + 1, n)
    return [np.sqrt(t / n) for t in total]


@criterion("loss_change", Needs.LOSS, across_groups=True,
           summary="the leave-one-out oracle: |loss change| of zeroing each channel (a pass per channel)")
def loss_change(ctx: ScoreContext) -> list:
    graph, loss = ctx.graph, GraphLoss(ctx)
    n = len(ctx.calibration)
    todo = np.flatnonzero(prunable_labels(graph) & ~loss.removed)
    change = np.zeros(len(loss.removed))
    with torch.no_grad():
        base = sum(float(loss(i, loss.base_masks)) for i in range(n)) / n
        for k, lab in enumerate(todo):
            masks = loss.masks([lab])
            change[lab] = abs(sum(float(loss(i, masks)) for i in range(n)) / n - base)
            if ctx.progress is not None:
                ctx.progress("score", k + 1, len(todo))
    return [change[g.labels] for g in graph.groups]
