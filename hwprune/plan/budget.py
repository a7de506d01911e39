"""The budgeted plan: widths per group for a budget (hwprune.plan.kinds: speedup, latency_ms,
flops, params, and any kind registered there), on the target's lattice.

The budget's kind turns its value into a figure in its pricing's unit (hwprune.plan.pricing);
for latency, each conv and linear is priced from its measured (or analytic) C_in and C_out
sweeps on the target's lattice, and the end-to-end calibration turns the figure in ms into a
limit on the sum of kernels.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import BudgetError, InputError
from .allocate import Problem, retained, solve
from .costs import build_cost_model
from .kinds import Budget, flag_of
from .pricing import Pricing


def candidates(width: int, lattice, min_width: int | None, size: int = 1) -> list[int]:
    """Lattice widths from the minimum width (default one lattice step) up, and the full width.

    size: elements per channel of the group (an attention head is head_dim elements of its
    projections): the lattice is on elements, so a group of heads of 32 steps by one head."""
    m = lattice.multiple // math.gcd(lattice.multiple, size)
    low = max(1, min_width if min_width is not None else m)
    if width <= low:
        return [width]
    start = -(-low // m) * m
    return sorted({*range(start, width + 1, m), width})


def uniform_widths(graph, groups, ratio: float, lattice=None) -> dict:
    """{group id: width} keeping 1 - ratio of every unfrozen group, snapped with a lattice to
    its nearest lattice width (the wider on a tie): an unaligned width can run slower than the
    original (a ResNet-18 at 32x32 cut by --ratio 0.2 to 52/103/205/410 channels ran 3.2x
    slower on onnxruntime CPU), an aligned one does not."""
    widths = {}
    for g in groups:
        if g.frozen is not None:
            continue
        keep = max(1, g.width - min(int(g.width * ratio), g.width - 1))
        if lattice is not None:
            cands = candidates(g.width, lattice, None, channel_size(graph, g))
            keep = min(cands, key=lambda w: (abs(w - keep), -w))
        widths[g.id] = keep
    return widths


def off_lattice(graph, groups, widths: dict, lattice) -> list:
    """The groups whose planned width is cut but not on the lattice."""
    return [g for g in groups if g.id in widths and widths[g.id] < g.width
            and widths[g.id] not in candidates(g.width, lattice, None, channel_size(graph, g))]


def normalized(scores, weight: float = 1.0) -> np.ndarray:
    """A group's scores over their mean, times `weight` (the parameters one channel owns):
    within a group every parameter averages 1, so layers whose weights are on other scales
    weigh alike (Torch-Pruning's "mean" normalizer for global pruning) and a head that owns
    49k weights weighs as much as 64 neurons that own 768 each. The planner maximizes the
    sum of these over the channels kept: importance-weighted parameters."""
    s = np.asarray(scores, dtype=float)
    mean = float(s.mean()) if s.size else 0.0
    return s / mean * weight if mean > 0 else s  # s / mean first: weight / a subnormal mean is inf


def group_values(graph, groups, scores) -> list:
    """What the planner maximizes, per group and channel: Fisher figures as they are (one unit
    across groups), magnitudes normalized per parameter (`normalized`)."""
    if getattr(scores, "across_groups", False):
        return [np.asarray(s, dtype=float) for s in scores]
    return [normalized(s, channel_params(graph, g)) for g, s in zip(groups, scores)]


def _balanced(graph, group, scores, widths, share: float) -> np.ndarray:
    """m * log(fraction of the group's importance kept), at each width.

    A layer that keeps a fraction f of its signal passes f on, and the layers after it
    compound it: the network keeps about the product of those fractions, so the planner
    maximizes the sum of their logs. Halving any group costs the same log 2, whatever its
    channels' parameter count, and cutting a group towards nothing costs without bound:
    cheap early layers are no longer the first to go. m counts the connections the group's
    channels carry (its weight members, a producer and a consumer to a connection): the
    residual stream of a stage passes through every block of it."""
    return _connections(graph, group) * _log_kept(scores, widths)


def _log_kept(scores, widths) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    total = float(s.sum())
    if total <= 0:  # nothing here carries signal: cutting it loses nothing
        return np.zeros(len(widths))
    return np.log(np.maximum(retained(s, widths) / total, 1e-12))


def _share(graph, group, scores, widths, share: float) -> np.ndarray:
    """share * log(fraction of the group's importance kept), share being the group's part of
    the model's cost at full width (the kernels it sizes).

    `balanced` weighs every group's log alike (times its connections m). Its optimum gives each
    group a cost proportional to m whatever the group cost before (with flat importance the
    Lagrange condition m_g / f_g = lambda * C_g makes f_g * C_g = m_g / lambda): the groups that
    carried most of the latency, a MiniLM's feed-forward or a MobileNet's expanded depthwise
    channels, are cut far below the rest. Weighing the log by C_g instead
    puts the optimum under flat importance at one kept fraction for every group, a uniform cut;
    importance moves widths away from it group by group, and the lattice and the measured costs
    (plateaus, steps) decide the rest. That holds where a group's kernels have one side fixed
    (a transformer's heads and neurons, between an uncut hidden size): their cost is linear in
    the group's width. Where a kernel's cost is the product of two cut groups' widths (a conv
    between two cut convs), the sum of their logs is flat along the product, and any split of it
    scores alike: there the optimum is not pinned at uniform (a chain of 64, 128 and 96 channels
    at half the flops keeps 32, 128 and 48)."""
    return share * _log_kept(scores, widths)


def _connections(graph, group) -> float:
    weights = sum(1 for shape, _, _ in _member_slots(graph, group) if len(shape) >= 2)
    return max(weights / 2, 1.0)


def _params_weighted(graph, group, scores, widths, share: float) -> np.ndarray:
    """Importance-weighted parameters kept (`normalized`): the objective before `balanced`.
    It cuts layers that own few parameters per channel first, which are the early, wide-
    activation ones that carry much of the latency: a ResNet-18 stem kept 8 of 64."""
    return retained(normalized(scores, channel_params(graph, group)), widths)


# What the planner maximizes over magnitude (within-group) criteria; figures in one unit
# across groups (Fisher) are summed as they are, whatever the objective.
# Each takes (graph, group, scores, candidate widths, the group's share of the full cost).
OBJECTIVES = {"balanced": _balanced, "params": _params_weighted, "share": _share}


def candidate_values(graph, groups, scores, cands: dict, objective: str = "balanced", cost=None) -> dict:
    """{group id: the objective at each of its candidate widths} for the groups in `cands`;
    `cost` (a CostModel) gives each group's share of the full cost (1 without it)."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective {objective!r} is unknown: choose one of {', '.join(OBJECTIVES)}")
    across = getattr(scores, "across_groups", False)
    shares = cost_shares(cost) if cost is not None else {}
    return {g.id: retained(s, cands[g.id]) if across else
            OBJECTIVES[objective](graph, g, s, cands[g.id], shares.get(g.id, 1.0))
            for g, s in zip(groups, scores) if g.id in cands}


def cost_shares(cost) -> dict:
    """{group id: the full cost of the kernels the group sizes, over the model's}: a kernel
    sized by two groups (C_in by one, C_out by another) counts in both."""
    whole = sum(t.full_cost for t in cost.terms) or 1.0
    return {g: sum(cost.terms[i].full_cost for i in set(touched)) / whole for g, touched in cost.by_group.items()}


def _member_slots(graph, group):
    """(slot shape, elements of the group in it) of each parameter member of a group."""
    slots = {f"{fqn}:{d}": (tid, d) for tid, d, fqn in graph.param_slots}
    for member in group.members:
        if member in slots:
            tid, d = slots[member]
            shape = graph.shapes[tid]
            lab = graph.dim_labels(tid, d)
            yield shape, d, int(np.isin(lab, group.labels).sum())


def channel_params(graph, group) -> float:
    """Parameters one channel of a group owns, over all its members (a 3x3 filter of 64
    inputs with its BN: 578; a BERT head of 32: 4 x 32 x 384 plus biases)."""
    total = sum(math.prod(shape) / shape[d] * n for shape, d, n in _member_slots(graph, group))
    return max(total / max(group.width, 1), 1.0)


def channel_size(graph, group) -> int:
    """Elements per channel of a group in its first parameter member (1 for a filter, head_dim
    for a head)."""
    for _, _, n in _member_slots(graph, group):
        return max(1, n // max(group.width, 1))
    return 1


def plan_budget(analysis, scores: list, budget: Budget, pricing: Pricing, lattice, *, min_width=None,
                internal: float | None = None, lattice_from: str = "", objective: str = "balanced"):
    """(widths {group id: width}, record for the report). `internal` overrides the budget on
    the kernel sum (the caller tightens it when the cut model lands above the request);
    `lattice_from` says where the lattice comes from, for the error when it alone is the limit;
    `objective` is what the widths maximize (OBJECTIVES). The record's retained_importance is
    importance-weighted parameters kept whatever the objective: one figure that compares plans
    of different models (the block search weighs removals by it)."""
    cost = build_cost_model(analysis, pricing.blocks, pricing.kernel_cost, pricing.unit, pricing.full_cost)
    groups = [g for g in analysis.groups if g.frozen is None and g.id in cost.full]
    size = {g.id: channel_size(analysis.graph, g) for g in groups}
    cands = {g.id: candidates(g.width, lattice, min_width, size[g.id]) for g in groups}
    value = candidate_values(analysis.graph, analysis.groups, scores, cands, objective, cost)
    weighted = {g.id: retained(v, cands[g.id]) for g, v in zip(analysis.groups, group_values(
        analysis.graph, analysis.groups, scores)) if g.id in cands}
    figure = budget.figure(pricing.full_figure)
    target_figure = figure if budget.latency else None  # the report's "requested": a latency asked in ms
    limit = internal if internal is not None else pricing.to_internal(figure)
    names = {g.id: g.members[0] + (f" (+{len(g.members) - 1})" if len(g.members) > 1 else "") for g in groups}
    try:
        plan = solve(Problem(cands, value, cost, names), limit)
    except BudgetError as e:
        raise _lattice_limited(e, cost, cands, limit, lattice, min_width, lattice_from) from None
    shares = _shares(cost, plan.widths)
    record = {"budget": {"kind": budget.kind, "value": budget.value}, "unit": pricing.unit,
              "model": pricing.source, "full": pricing.full_figure, "requested": target_figure,
              "planner": {"limit": limit, "cost_before": plan.full_cost, "cost_after": plan.cost,
                          "objective": objective, "objective_value": plan.value,
                          "retained_importance": float(sum(weighted[g][cands[g].index(w)]
                                                           for g, w in plan.widths.items())),
                          "moves": plan.moves},
              "groups": [{"id": g.id, "width_before": g.width, "width_after": plan.widths[g.id],
                          "lattice": cands[g.id][:1] + cands[g.id][-1:], "share_of_saving": shares.get(g.id, 0.0)}
                         for g in groups]}
    return plan.widths, record


def budget_line(plan: dict) -> str:
    """The report's plan in one line: the budget and what it was planned on."""
    b, lattice = plan["budget"], plan.get("lattice") or {}
    on = plan["target"] or f"the portable lattice of % {lattice.get('multiple')} (no target)"
    return f"{flag_of(b['kind'])} {b['value']:g} on {on}"


def _lattice_limited(error: BudgetError, cost, cands: dict, limit: float, lattice, min_width,
                     lattice_from: str) -> BudgetError:
    """The error, saying so where the budget fails only because widths sit on the lattice:
    at one channel per group (off any lattice) it would fit."""
    if cost.total({g: 1 for g in cands}) > limit:
        return error
    floor = min_width if min_width is not None and min_width > lattice.multiple else None
    keeps = f"--min-width {floor} keeps" if floor else "the lattice keeps"
    return BudgetError(
        f"{error}. It fails only because widths sit on the lattice of % {lattice.multiple} "
        f"({lattice_from or lattice.describe()}): {keeps} each group at {floor or lattice.multiple} channels or "
        f"more. Give --target with a finer lattice (`hwprune targets`), {'lower --min-width, ' if floor else ''}"
        "or ask for less")


def _shares(cost, widths: dict) -> dict:
    """Each group's share of what the plan saves: the cost of restoring that group alone."""
    back = {g: cost.delta(widths, {g: cost.full[g]}) for g, w in widths.items() if w < cost.full[g]}
    total = sum(back.values())
    return {g: round(v / total, 4) for g, v in back.items()} if total > 0 else {}
