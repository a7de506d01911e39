"""Activation statistics on calibration inputs, read where each channel is consumed.

A channel is measured at every activation where an op reads it and the channel ends there
(a conv or linear that mixes it away, a reduction over it: the places the cut zeroes it, the
same places Fisher gates, hwprune.importance.fisher.gated_dims), not where it only passes
through. At each such place the statistic is the mean over the channel's elements (batch,
positions, a head's head_dim), and a channel's figure is the mean over its places and the
calibration batches:
- activation: mean |a| (Hu et al. 2016 / Molchanov et al. 2017 "mean activation");
- apoz: 1 - APoZ, the fraction of non-zero elements (Hu et al., "Network Trimming", 2016):
  a channel a ReLU keeps at zero scores 0.
Their scale is each layer's own, so the planner compares them per parameter, as magnitudes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..graph.masked import removal_masks, run_masked, zero_removed
from .registry import Needs, ScoreContext, criterion
from .fisher import gated_dims, prunable_labels


@criterion("activation", Needs.INPUTS, summary="mean |a| where the channel is consumed, on calibration inputs")
def activation(ctx: ScoreContext) -> list:
    return _statistic(ctx, torch.abs)


@criterion("apoz", Needs.INPUTS, summary="1 - APoZ: the fraction of non-zero activations where consumed")
def apoz(ctx: ScoreContext) -> list:
    return _statistic(ctx, lambda v: (v != 0).to(v.dtype))


def _statistic(ctx: ScoreContext, f) -> list:
    graph = ctx.graph
    places = gated_dims(graph, prunable_labels(graph))  # {tensor: [(dim, labels, readers)]}
    cuts = removal_masks(graph, ctx.removed) if ctx.removed is not None else {}
    entries = {t: (t, cuts.get(t), places.get(t, [])) for t in set(places) | set(cuts)}
    nlab = int(graph.labels.max()) + 1
    total, seen = np.zeros(nlab), np.zeros(nlab)
    done: set = set()

    def apply(v, entry, reader):
        name, cut, dims = entry
        if cut is not None:
            v = zero_removed(v, cut)
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            return v
        for d, lab, readers in dims:
            if reader.name in readers and (name, d) not in done:  # once per tensor, however many read it
                done.add((name, d))
                _record(f(v.detach()), d, lab.numpy(), total, seen)
        return v

    n = len(ctx.calibration)
    with torch.no_grad():
        for i, item in enumerate(ctx.calibration):
            done.clear()
            run_masked(graph, ctx.model, item, entries, apply)
            if ctx.progress is not None:
                ctx.progress("score", i + 1, n)
    mean = np.divide(total, seen, out=np.zeros(nlab), where=seen > 0)
    return [mean[g.labels] for g in graph.groups]


def _record(stat: torch.Tensor, d: int, lab: np.ndarray, total: np.ndarray, seen: np.ndarray) -> None:
    """Add the mean of `stat` over each channel's elements along dim d (a label may own several
    indices: a head's head_dim) to `total`, and count the place in `seen`."""
    dims = [k for k in range(stat.dim()) if k != d]
    sums = (stat.sum(dims) if dims else stat).double().cpu().numpy()
    per_index = stat.numel() / max(stat.shape[d], 1)
    s = np.bincount(lab, sums, minlength=len(total))
    c = np.bincount(lab, np.full(len(lab), per_index), minlength=len(total))
    has = c > 0
    total[has] += s[has] / c[has]
    seen[has] += 1
