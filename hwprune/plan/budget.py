"""Budgets and the budgeted plan: widths per group from a latency, MAC or parameter budget.

    Budget("speedup", 2.0)      predicted latency <= predicted latency of the original / 2
    Budget("latency_ms", 5.0)   predicted latency <= 5 ms
    Budget("flops", 0.5)        conv and linear MACs <= half of the original's
    Budget("params", 0.5)       conv and linear weights <= half of the original's

Latency comes from the target's model (hwprune.hardware.latency): each conv and linear is
priced from its measured (or analytic) C_in and C_out sweeps on the target's lattice, the
end-to-end calibration turns the budget in ms into a budget on the sum of kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError, InputError
from ..hardware.blocks import channels, onnx_blocks, with_channels
from .allocate import Problem, retained, solve
from .costs import build_cost_model, full_channels

KINDS = ("speedup", "latency_ms", "flops", "params")
LATENCY = ("speedup", "latency_ms")


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"budget {self.kind!r} is unknown: choose one of {', '.join(KINDS)}")
        v = self.value
        ok = {"speedup": v >= 1.0, "latency_ms": v > 0, "flops": 0 < v <= 1, "params": 0 < v <= 1}[self.kind]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not ok:
            need = {"speedup": "1 or more (2 = twice as fast)", "latency_ms": "a positive number of ms",
                    "flops": "a fraction in (0, 1] of the MACs to keep", "params": "a fraction in (0, 1] of "
                    "the parameters to keep"}[self.kind]
            raise InputError(f"--{self.kind.replace('_', '-')} {v!r} is out of range: give {need}")

    @property
    def latency(self) -> bool:
        return self.kind in LATENCY

    def flag(self) -> str:
        return f"--{self.kind.replace('_', '-')} {self.value:g}"


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


def _balanced(graph, group, scores, widths) -> np.ndarray:
    """m * log(fraction of the group's importance kept), at each width.

    A layer that keeps a fraction f of its signal passes f on, and the layers after it
    compound it: the network keeps about the product of those fractions, so the planner
    maximizes the sum of their logs. Halving any group costs the same log 2, whatever its
    channels' parameter count, and cutting a group towards nothing costs without bound:
    cheap early layers are no longer the first to go. m counts the connections the group's
    channels carry (its weight members, a producer and a consumer to a connection): the
    residual stream of a stage passes through every block of it."""
    s = np.asarray(scores, dtype=float)
    total = float(s.sum())
    if total <= 0:  # nothing here carries signal: cutting it loses nothing
        return np.zeros(len(widths))
    kept = np.maximum(retained(s, widths) / total, 1e-12)
    return _connections(graph, group) * np.log(kept)


def _connections(graph, group) -> float:
    weights = sum(1 for shape, _, _ in _member_slots(graph, group) if len(shape) >= 2)
    return max(weights / 2, 1.0)


def _params_weighted(graph, group, scores, widths) -> np.ndarray:
    """Importance-weighted parameters kept (`normalized`): the objective before `balanced`.
    It cuts layers that own few parameters per channel first, which are the early, wide-
    activation ones that carry much of the latency: a ResNet-18 stem kept 8 of 64."""
    return retained(normalized(scores, channel_params(graph, group)), widths)


# What the planner maximizes over magnitude (within-group) criteria; figures in one unit
# across groups (Fisher) are summed as they are, whatever the objective.
OBJECTIVES = {"balanced": _balanced, "params": _params_weighted}


def candidate_values(graph, groups, scores, cands: dict, objective: str = "balanced") -> dict:
    """{group id: the objective at each of its candidate widths} for the groups in `cands`."""
    if objective not in OBJECTIVES:
        raise InputError(f"objective {objective!r} is unknown: choose one of {', '.join(OBJECTIVES)}")
    across = getattr(scores, "across_groups", False)
    return {g.id: retained(s, cands[g.id]) if across else OBJECTIVES[objective](graph, g, s, cands[g.id])
            for g, s in zip(groups, scores) if g.id in cands}


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


@dataclass
class Pricing:
    """How kernels are priced for a budget, and the figure the budget is stated in."""
    blocks: list
    kernel_cost: object  # (block, c_in, c_out) -> cost
    unit: str
    to_internal: object  # budget figure -> budget on the sum of kernel costs
    full_figure: float  # the original's figure (ms, MACs, params)
    source: str
    full_cost: object = None  # block -> its cost at full width (default: kernel_cost at full channels)


def latency_pricing(lm, graph, progress=None) -> Pricing:
    """Kernels priced from the latency model: sweeps for a table, the formula when analytic."""
    from ..hardware.latency import MeasuredLatency, in_place, separable, sweep_key
    from ..hardware.profile import sweeps

    blocks = lm.blocks(graph)
    full = lm.predict(blocks)
    if isinstance(lm, MeasuredLatency):
        table = lm.table
        jobs = [(b, ci, co) for b in blocks if channels(b) for ci, co in sweeps(b, _lattice_of(lm), 8)]
        for i, (b, ci, co) in enumerate(jobs):  # what the table lacks is measured once and kept
            if progress is not None:
                progress("latency sweeps", i, len(jobs))
            variant = with_channels(b, ci, co)
            if not table.as_sweep_point(variant.key, sweep_key(b), (ci, co)) and lm.runtime is not None:
                lm.measure_block(variant, sweep_key(b), (ci, co))
        if table.dirty and lm.runtime is not None:
            table.save()

        def kernel_cost(block, c_in, c_out):
            ch = channels(block)
            ms = separable(table.sweep(sweep_key(block)), c_in, c_out, (ch.c_in, ch.c_out), ch.coupled)
            return ms if ms is not None else lm.kernel_ms(with_channels(block, c_in, c_out))[0]
    else:
        def kernel_cost(block, c_in, c_out):
            return lm.kernel_ms(with_channels(block, c_in, c_out))[0]
    scale, offset = full.calibration["scale"], full.calibration["offset_ms"]
    # a layer at full width priced as at any other width (its sweeps, smoothed), so that no
    # step away from it looks cheaper or dearer than it is
    at_full = {b.name: kernel_cost(b, *full_channels(b)) if channels(b) else k.ms
               for b, k in zip(blocks, full.kernels)}
    source, in_model = full.model, sum(at_full.values()) / max(full.kernels_ms, 1e-9)
    placed = in_place(lm, graph, blocks)
    if placed:  # each kernel as it runs inside this model: its time alone, times its in-place factor
        factor = {b.name: placed[b.name] / at_full[b.name] for b in blocks
                  if b.name in placed and at_full[b.name] > 0}
        alone = kernel_cost

        def kernel_cost(block, c_in, c_out):
            return alone(block, c_in, c_out) * factor.get(block.name, 1.0)
        in_model = sum(ms * factor.get(name, 1.0) for name, ms in at_full.items()) / max(full.kernels_ms, 1e-9)
        at_full = {name: ms * factor.get(name, 1.0) for name, ms in at_full.items()}
        source += f", kernels scaled to their time inside the model ({len(factor)} of {len(blocks)})"
    return Pricing(blocks, kernel_cost, "ms", lambda ms: (ms - offset) / scale * in_model, full.total_ms, source,
                   lambda b: at_full[b.name])


def _lattice_of(lm):
    from ..hardware import get_target
    return get_target(lm.table.identity["target"]).lattice


def size_pricing(graph, kind: str) -> Pricing:
    """MACs or parameters of the convs and linears (other kernels count nothing)."""
    blocks = onnx_blocks(graph)

    def kernel_cost(block, c_in, c_out):
        ch = channels(block)
        if ch is None:
            return 0.0
        w = next(t for t in block.inputs if t.name == block.nodes[0].input[1])
        per_in = 1 if ch.coupled else c_in / ch.c_in
        n = math.prod(w.shape) * per_in * c_out / ch.c_out
        if kind == "params":
            return n + (c_out if len(block.nodes[0].input) > 2 and block.nodes[0].input[2] else 0)
        spatial = math.prod(block.outputs[0].shape) / (block.outputs[0].shape[1 if len(w.shape) > 2 else -1])
        return n * spatial

    total = sum(kernel_cost(b, *full_channels(b)) for b in blocks)
    unit = "MACs" if kind == "flops" else "parameters"
    return Pricing(blocks, kernel_cost, unit, lambda fraction: fraction * total, total, f"{unit} of convs and linears")


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
    value = candidate_values(analysis.graph, analysis.groups, scores, cands, objective)
    weighted = {g.id: retained(v, cands[g.id]) for g, v in zip(analysis.groups, group_values(
        analysis.graph, analysis.groups, scores)) if g.id in cands}
    target_figure = pricing.full_figure / budget.value if budget.kind == "speedup" else \
        budget.value if budget.kind == "latency_ms" else None
    limit = internal if internal is not None else (
        pricing.to_internal(target_figure) if target_figure is not None else pricing.to_internal(budget.value))
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
    return f"--{b['kind'].replace('_', '-')} {b['value']:g} on {on}"


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
