"""The plan stage: a ratio, explicit widths, or a budget landed where it is measured, to a Plan."""
from __future__ import annotations

import warnings

from ..errors import InputError, LatticeWarning
from . import Plan, plan_widths


def plan_cut(a, scores, config, *, budget=None, widths: dict | None = None, how=None, scorer=None,
             progress=None, on_round=None) -> Plan:
    """The plan stage: with a budget (hwprune.plan.kinds.Budget), its widths planned and landed
    where it is measured (hwprune.plan.land, as `how`, a LandingConfig, says); else `widths`
    ({group id: channels to keep}), or config.ratio of every group's channels, the most
    important kept (`scores`)."""
    from .kinds import budget_of
    from .land import LandingConfig, land
    how = how or LandingConfig()
    if budget is not None:
        return land(a, scores, config, budget, how, scorer, progress, on_round)
    if how.allow_block_removal:
        budget_of({}, allow_block_removal=True)  # refuses it, naming the registered kinds
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
