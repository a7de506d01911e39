"""The plan stage and its allocators: how many channels each group keeps, and which.

Plan: the plan stage's record (the stage, plan_cut, is hwprune.plan.stage);
plan_widths: explicit widths to a cut; removed_from_kept: a report's kept indices back to a
cut; hwprune.plan.budget: widths for a budget; hwprune.plan.land: landing a budget where it
is measured; hwprune.plan.depth: residual blocks removed whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Plan:
    """The plan stage's record: the channels to cut (`removed`, a bool per channel label of
    `analysis`) and how they were chosen. analysis: the Analysis the cut applies to (the
    landing's without the residual blocks it removed, where it removed any); config: what
    the plan adds to the report's "config" (a budget, its target, ...); sections: the report
    sections the plan states, in order ("lattice" for a ratio; "plan", and "depth" with block
    removal, for a budget); landed: for a budget, the Verified cut the landing measured
    (hwprune.plan.land), which the cut and verify stages do not redo."""
    analysis: object
    removed: np.ndarray
    config: dict = field(default_factory=dict)
    sections: tuple = ()
    landed: object = None


def plan_widths(groups, scores, widths: dict) -> dict:
    """Keep widths[group id] channels of each listed group, most important first.
    Returns {group id: removed channel positions}; frozen groups cannot be narrowed."""
    cuts = {}
    for g, s in zip(groups, scores):
        if g.id not in widths:
            continue
        keep = int(widths[g.id])
        if not 1 <= keep <= g.width:
            raise ValueError(f"group {g.id} ({', '.join(g.members[:2])}) has {g.width} channels: "
                             f"cannot keep {keep}; give a width from 1 to {g.width}")
        if g.frozen is not None and keep < g.width:
            raise ValueError(f"group {g.id} ({', '.join(g.members[:2])}) is frozen ({g.frozen}): it keeps all "
                             f"{g.width} channels")
        if keep < g.width:
            cuts[g.id] = np.sort(np.argsort(s, kind="stable")[: g.width - keep])
    return cuts


def removed_from_kept(graph, kept: dict) -> np.ndarray:
    """The cut (a bool per channel label of the ChannelGraph) whose surviving indices are a
    report's `kept` ({parameter: {dim: indices}}): how `apply` repeats a report's cut on
    another checkpoint. InputError where this graph has no such parameter or the indices are
    not a cut of its groups (another architecture or input shape)."""
    from ..errors import InputError
    removed = np.zeros(int(graph.labels.max()) + 1, dtype=bool)
    slots = {(fqn, d): (tid, d) for tid, d, fqn in graph.param_slots}
    for fqn, dims in kept.items():
        for d, idx in dims.items():
            if (fqn, int(d)) not in slots:
                raise InputError(f"the report cuts {fqn} dim {d}, which this model does not have: "
                                 "apply a report only to the architecture it was made for")
            tid, d = slots[(fqn, int(d))]
            lab = graph.dim_labels(tid, d)
            drop = np.setdiff1d(np.arange(len(lab)), np.asarray(idx, dtype=int))
            removed[lab[drop]] = True
    got = {k: {str(d): v.tolist() for d, v in dims.items()} for k, dims in graph.param_kept(removed).items()}
    if got != {k: {str(d): list(v) for d, v in dims.items()} for k, dims in kept.items()}:
        raise InputError("the report's kept channels are not a valid cut of this model's channel groups: "
                         "was it made for another architecture or input shape?")
    return removed
