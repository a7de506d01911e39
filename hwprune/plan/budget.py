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

from ..errors import InputError
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


def normalized(scores, weight: float = 1.0) -> np.ndarray:
    """A group's scores over their mean, times `weight` (the parameters one channel owns):
    within a group every parameter averages 1, so layers whose weights are on other scales
    weigh alike (Torch-Pruning's "mean" normalizer for global pruning) and a head that owns
    49k weights weighs as much as 64 neurons that own 768 each. The planner maximizes the
    sum of these over the channels kept: importance-weighted parameters."""
    s = np.asarray(scores, dtype=float)
    mean = float(s.mean()) if s.size else 0.0
    return s * (weight / mean) if mean > 0 else s


def group_values(graph, groups, scores) -> list:
    """What the planner maximizes, per group and channel: Fisher figures as they are (one unit
    across groups), magnitudes normalized per parameter (`normalized`)."""
    if getattr(scores, "across_groups", False):
        return [np.asarray(s, dtype=float) for s in scores]
    return [normalized(s, channel_params(graph, g)) for g, s in zip(groups, scores)]


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
                internal: float | None = None):
    """(widths {group id: width}, record for the report). `internal` overrides the budget on
    the kernel sum (the caller tightens it when the cut model lands above the request)."""
    cost = build_cost_model(analysis, pricing.blocks, pricing.kernel_cost, pricing.unit, pricing.full_cost)
    groups = [g for g in analysis.groups if g.frozen is None and g.id in cost.full]
    size = {g.id: channel_size(analysis.graph, g) for g in groups}
    cands = {g.id: candidates(g.width, lattice, min_width, size[g.id]) for g in groups}
    value = {g.id: retained(v, cands[g.id]) for g, v in zip(analysis.groups, group_values(analysis.graph,
                                                                                        analysis.groups, scores))
             if g.id in cands}
    target_figure = pricing.full_figure / budget.value if budget.kind == "speedup" else \
        budget.value if budget.kind == "latency_ms" else None
    limit = internal if internal is not None else (
        pricing.to_internal(target_figure) if target_figure is not None else pricing.to_internal(budget.value))
    names = {g.id: g.members[0] + (f" (+{len(g.members) - 1})" if len(g.members) > 1 else "") for g in groups}
    plan = solve(Problem(cands, value, cost, names), limit)
    shares = _shares(cost, plan.widths)
    record = {"budget": {"kind": budget.kind, "value": budget.value}, "unit": pricing.unit,
              "model": pricing.source, "full": pricing.full_figure, "requested": target_figure,
              "planner": {"limit": limit, "cost_before": plan.full_cost, "cost_after": plan.cost,
                          "retained_importance": plan.value, "moves": plan.moves},
              "groups": [{"id": g.id, "width_before": g.width, "width_after": plan.widths[g.id],
                          "lattice": cands[g.id][:1] + cands[g.id][-1:], "share_of_saving": shares.get(g.id, 0.0)}
                         for g in groups]}
    return plan.widths, record


def _shares(cost, widths: dict) -> dict:
    """Each group's share of what the plan saves: the cost of restoring that group alone."""
    back = {g: cost.delta(widths, {g: cost.full[g]}) for g, w in widths.items() if w < cost.full[g]}
    total = sum(back.values())
    return {g: round(v / total, 4) for g, v in back.items()} if total > 0 else {}
