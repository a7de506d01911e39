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

from ..errors import InputError
from .registry import CRITERIA, Criterion, Needs, ScoreContext, Scores, criterion, criterion_names, data_criteria

__all__ = ["CRITERIA", "Criterion", "Needs", "ScoreContext", "Scores", "criterion", "criterion_names",
           "data_criteria", "score"]


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
                         f"{', '.join(criterion_names(Needs.LOSS))}")
    if loss_fn is not None and teacher is not None:
        raise InputError("both loss_fn and teacher were given: the teacher is for the default distillation loss; "
                         "give one (a loss_fn may call the teacher itself)")
    if row.reads_inputs and (model is None or not calibration):
        raise InputError(f"importance {name!r} measures on inputs: give the model and calibration, a non-empty "
                         "list of input tuples (hwprune.slim uses its example inputs when none are given)")
    ctx = ScoreContext(graph, tensors, seed, model, calibration, progress, removed, compensation, loss_fn, teacher)
    return Scores(tuple(row.fn(ctx)), row.across_groups)


# the criteria register themselves, in this order (the CLI lists them so)
from . import magnitude, fisher, activation, taylor  # noqa: E402,F401,I001
