"""Importance of each channel of a group, aggregated over every parameter the group touches.

One registry, CRITERIA: each criterion is one function plus one row (`@criterion(...)`)
saying what it reads (Needs: the weights, calibration inputs, or a loss on them) and whether
its figures are in one unit across groups (`Scores.across_groups`: the planner compares them
directly) or only within a group (the planner normalizes them per parameter,
hwprune.plan.budget.group_values).

Weights: l2 (sqrt of the sum of squares of every weight a channel owns, across all members),
l1 (the sum of absolute values), bn (the sum of |gamma| over the group's batch-norm scales;
groups without one fall back to l2), random (a seeded control).
Inputs: fisher (hwprune.importance.fisher), activation and apoz (hwprune.importance.activation).
A loss: taylor and loss_change (hwprune.importance.taylor).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import InputError


class Needs(enum.Enum):
    WEIGHTS = "the weights"
    INPUTS = "calibration inputs"
    LOSS = "a loss on calibration inputs"


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable  # fn(ScoreContext) -> [one array per group]
    needs: Needs
    across_groups: bool  # figures in one unit for every group (a head and a neuron compare directly)
    summary: str


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may read. model/calibration for Needs.INPUTS and LOSS; removed: a
    bool per channel label, the channels already cut (measure the model with them masked);
    compensation: (folds, means) of hwprune.compensate (fisher reads it); loss_fn(model,
    batch) -> scalar and teacher: hwprune.importance.loss."""
    graph: object
    tensors: dict
    seed: int = 0
    model: object = None
    calibration: list | None = None
    progress: Callable | None = None
    removed: np.ndarray | None = None
    compensation: tuple | None = None
    loss_fn: Callable | None = None
    teacher: object = None

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


CRITERIA: dict = {}


def criterion(name: str, needs: Needs = Needs.WEIGHTS, across_groups: bool = False, summary: str = ""):
    def register(fn):
        if name in CRITERIA:
            raise ValueError(f"two criteria named {name}")
        CRITERIA[name] = Criterion(name, fn, needs, across_groups, summary or (fn.__doc__ or "").split("\n")[0])
        return fn
    return register


def _powered(t: torch.Tensor, power: int | None) -> torch.Tensor:
    t = t.detach().float()
    return t if power is None else t.abs() if power == 1 else t.pow(2)


def _per_index(t: torch.Tensor, dim: int) -> np.ndarray:
    """Sum of an already powered tensor over every dim but `dim`."""
    dims = [d for d in range(t.dim()) if d != dim]
    return (t.sum(dims) if dims else t).cpu().numpy().astype(np.float64)


def _accumulate(graph, tensors: dict, slots, power: int | None) -> list:
    """Per group, per channel: the sum over the given parameter slots of |w|^power (of w
    itself with power None). Slots whose tensor is not in `tensors` are skipped."""
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
        if not ok.any() or fqn not in tensors:
            continue
        if powered[0] != fqn:
            powered = (fqn, _powered(tensors[fqn], power))
        v = _per_index(powered[1], d)
        for gid in np.unique(grp[lab][ok]):
            sel = ok & (grp[lab] == gid)
            np.add.at(scores[gid], pos[lab][sel], v[sel])
    return scores


@criterion("l2", summary="sqrt of the sum of squares of every weight a channel owns, over the group")
def l2(ctx: ScoreContext):
    return [np.sqrt(s) for s in _accumulate(ctx.graph, ctx.tensors, ctx.graph.param_slots, 2)]


@criterion("l1", summary="sum of |w| of every weight a channel owns, over the group")
def l1(ctx: ScoreContext):
    return _accumulate(ctx.graph, ctx.tensors, ctx.graph.param_slots, 1)


@criterion("bn", summary="sum of |gamma| of the group's batch-norm scales (l2 where it has none)")
def bn_scale(ctx: ScoreContext):
    gammas = _bn_weights(ctx.graph)
    bn = _accumulate(ctx.graph, ctx.tensors, [s for s in ctx.graph.param_slots if s[0] in gammas], 1)
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


class Scores(list):
    """One array per group. across_groups: the figures are in one unit for every group (a
    head and a neuron compare directly), not only within a group."""
    across_groups: bool = False


def score(graph, tensors: dict, name: str, seed: int = 0, model=None, calibration=None, progress=None,
          removed=None, compensation=None, *, loss_fn=None, teacher=None) -> Scores:
    """One array of channel scores per group, in the group's channel order. Criteria that read
    inputs run `model`'s traced graph on `calibration`, a list of input tuples (with a
    loss_fn, an item may carry more after the inputs, such as labels, for the loss); with
    `removed` (a bool per channel label), on the model with those channels cut. loss_fn(model,
    batch) -> scalar tensor is the loss of taylor and loss_change (default: see
    hwprune.importance.loss); teacher: a model whose outputs the default loss distils."""
    if name not in CRITERIA:
        raise InputError(f"importance {name!r} is unknown: choose one of {', '.join(CRITERIA)}")
    row = CRITERIA[name]
    if row.needs is not Needs.LOSS and (loss_fn is not None or teacher is not None):
        raise InputError(f"importance {name!r} reads {row.needs.value}, not a loss: loss_fn and teacher are for "
                         f"{', '.join(n for n, c in CRITERIA.items() if c.needs is Needs.LOSS)}")
    if loss_fn is not None and teacher is not None:
        raise InputError("both loss_fn and teacher were given: the teacher is for the default distillation loss; "
                         "give one (a loss_fn may call the teacher itself)")
    if row.needs is not Needs.WEIGHTS and (model is None or not calibration):
        raise InputError(f"importance {name!r} measures on inputs: give the model and calibration, a non-empty "
                         "list of input tuples (hwprune.slim uses its example inputs when none are given)")
    ctx = ScoreContext(graph, tensors, seed, model, calibration, progress, removed, compensation, loss_fn, teacher)
    out = Scores(row.fn(ctx))
    out.across_groups = row.across_groups
    return out


from . import activation, fisher, taylor  # noqa: E402,F401  (their criteria register themselves)

DATA_CRITERIA = tuple(n for n, c in CRITERIA.items() if c.needs is not Needs.WEIGHTS)  # measured on inputs
LOSS_CRITERIA = tuple(n for n, c in CRITERIA.items() if c.needs is Needs.LOSS)
