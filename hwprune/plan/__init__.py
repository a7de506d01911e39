"""Allocators: how many channels each group keeps, and which."""
from __future__ import annotations

import numpy as np


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
