"""Importance of each channel of a group, aggregated over every parameter the group touches.

l2: sqrt of the sum of squares of every weight a channel owns, across all members;
l1: the sum of absolute values; bn: the sum of |gamma| over the group's batch-norm scales
(groups without one fall back to l2, and the report says so); random: a seeded control;
fisher: the squared change of the output when the channel is removed, on calibration inputs
(hwprune.importance.fisher). Fisher figures are in one unit across groups; the others are
compared across groups per parameter (hwprune.plan.budget.group_values).
"""
from __future__ import annotations

import numpy as np
import torch

CRITERIA: dict = {}


def criterion(name: str):
    def register(fn):
        if name in CRITERIA:
            raise ValueError(f"two criteria named {name}")
        CRITERIA[name] = fn
        return fn
    return register


def _powered(t: torch.Tensor, power: int) -> torch.Tensor:
    t = t.detach().float()
    return t.abs() if power == 1 else t.pow(2)


def _per_index(t: torch.Tensor, dim: int) -> np.ndarray:
    """Sum of an already powered tensor over every dim but `dim`."""
    dims = [d for d in range(t.dim()) if d != dim]
    return (t.sum(dims) if dims else t).cpu().numpy().astype(np.float64)


def _accumulate(graph, tensors: dict, slots, power: int) -> list:
    """Per group, per channel: the sum over the given parameter slots of |w|^power."""
    pos = np.full(int(graph.labels.max()) + 1, -1)
    grp = np.full_like(pos, -1)
    for g in graph.groups:
        pos[g.labels] = np.arange(g.width)
        grp[g.labels] = g.id
    scores = [np.zeros(g.width) for g in graph.groups]
    powered = (None, None)  # (fqn, |w|^power): once per tensor, not per dim (a tensor's slots are adjacent)
    for tid, d, fqn in slots:
        lab = graph.dim_labels(tid, d)
        ok = grp[lab] >= 0
        if not ok.any():
            continue
        if powered[0] != fqn:
            powered = (fqn, _powered(tensors[fqn], power))
        v = _per_index(powered[1], d)
        for gid in np.unique(grp[lab][ok]):
            sel = ok & (grp[lab] == gid)
            np.add.at(scores[gid], pos[lab][sel], v[sel])
    return scores


@criterion("l2")
def l2(graph, tensors, rng):
    return [np.sqrt(s) for s in _accumulate(graph, tensors, graph.param_slots, 2)]


@criterion("l1")
def l1(graph, tensors, rng):
    return _accumulate(graph, tensors, graph.param_slots, 1)


@criterion("bn")
def bn_scale(graph, tensors, rng):
    gammas = _bn_weights(graph)
    bn = _accumulate(graph, tensors, [s for s in graph.param_slots if s[0] in gammas], 1)
    fallback = l2(graph, tensors, rng)
    return [b if b.any() else f for b, f in zip(bn, fallback)]


@criterion("random")
def random(graph, tensors, rng):
    return [rng.random(g.width) for g in graph.groups]


def _bn_weights(graph) -> set:
    ops = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default}
    out = set()
    for n in graph.traced.graph.nodes:
        if n.op == "call_function" and n.target in ops and len(n.args) > 1:
            if isinstance(n.args[1], torch.fx.Node):
                out.add(n.args[1].name)
    return out


DATA_CRITERIA = ("fisher",)  # measured on inputs: need the model and calibration inputs


class Scores(list):
    """One array per group. across_groups: the figures are in one unit for every group (a
    head and a neuron compare directly), not only within a group."""
    across_groups: bool = False


def score(graph, tensors: dict, name: str, seed: int = 0, model=None, calibration=None, progress=None,
          removed=None, compensation=None) -> Scores:
    """One array of channel scores per group, in the group's channel order. Data criteria
    (fisher) run `model`'s traced graph on `calibration`, a list of input tuples; with
    `removed` (a bool per channel label), on the model with those channels cut."""
    if name in DATA_CRITERIA:
        from .fisher import fisher
        out = Scores(fisher(graph, model, calibration, seed, progress, removed, compensation))
        out.across_groups = True
        return out
    return Scores(CRITERIA[name](graph, tensors, np.random.default_rng(seed)))
