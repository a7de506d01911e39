"""The plan stage and its allocators: how many channels each group keeps, and which.

plan_cut: the stage (a ratio, explicit widths, or a budget landed) to a Plan;
plan_widths: explicit widths to a cut; removed_from_kept: a report's kept indices back to a
cut; hwprune.plan.budget: widths for a budget; hwprune.plan.land: landing a budget where it
is measured; hwprune.plan.depth: residual blocks removed whole.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, LatticeWarning


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


def plan_cut(a, scores, config, *, budget=None, widths: dict | None = None, how=None, scorer=None,
             progress=None, on_round=None) -> Plan:
    """The plan stage: with a budget (hwprune.plan.budget.Budget), its widths planned and landed
    where it is measured (hwprune.plan.land, as `how`, a LandingConfig, says); else `widths`
    ({group id: channels to keep}), or config.ratio of every group's channels, the most
    important kept (`scores`)."""
    from .land import LandingConfig, land
    how = how or LandingConfig()
    if budget is not None:
        return land(a, scores, config, budget, how, scorer, progress, on_round)
    if how.allow_block_removal:
        raise InputError("allow_block_removal needs a budget to weigh blocks against width: give speedup, "
                         "latency_ms, flops or params")
    sections = ()
    if widths is None:
        widths, lattice = ratio_widths(a, config.ratio, how.target)
        sections = (("lattice", lattice),)
    try:
        cuts = plan_widths(a.groups, scores, widths)
    except ValueError as e:
        raise InputError(f"widths: {e}") from e
    return Plan(a, a.graph.removed_of(cuts), sections=sections)


def ratio_widths(a, ratio: float, target: str | None) -> tuple:
    """Uniform widths for a ratio, and the report's "lattice": on the target's lattice where
    one is named; without one, as the ratio says, with a warning for each width off the
    portable lattice (the CPU's AVX2 fast path and fp16 tensor cores want 8)."""
    from ..hardware import get_target
    from ..hardware.lattice import lattice_for
    from .budget import off_lattice, uniform_widths
    lattice, source = lattice_for(get_target(target) if target is not None else None)
    widths = uniform_widths(a.graph, a.groups, ratio, lattice if target is not None else None)
    off = off_lattice(a.graph, a.groups, widths, lattice)
    if off:
        g = off[0]
        warnings.warn(f"ratio {ratio:g} leaves {len(off)} group(s) off the lattice of % {lattice.multiple}, for "
                      f"example {g.members[0]} at {widths[g.id]} of {g.width} channels: such widths can run slower "
                      "than the original. Give a target (--target) to snap the widths to its lattice",
                      LatticeWarning, stacklevel=5)
    return widths, {"multiple": lattice.multiple, "from": source, "snapped": target is not None,
                    "off_lattice": [g.id for g in off]}


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
