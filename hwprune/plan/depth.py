"""Depth pruning: remove whole residual blocks where that buys latency more cheaply than width.

A removable block is a module M whose call is `y = act(x + branch(x))` (act: nothing or an
elementwise activation after the add, inside M): x is M's only activation input, the
branch's output is read by the add alone, y is the only tensor M hands on and has x's shape.
ResNet's blocks, MobileNetV2's and EfficientNet's inverted residuals with a skip, ConvNeXt's
and RegNet's blocks are of this form. Removing M replaces it with `Skip`, which computes
act(x): exactly the original with the branch's output zeroed where the add reads it, which
`verify_removal` checks on the traced graph (the mask-equivalence oracle, with the whole
branch output masked).

Whether to remove is decided by the budget: blocks are ranked by the importance their
internal channel groups keep at the width plan per unit of the latency their kernels cost;
the k cheapest (k = 1, 2, 4, ...) are removed and the widths planned again for the same
budget, and the removal is kept only where the plan then retains more importance than the
width-only plan did (`choose_blocks`, which the landing calls: hwprune.plan.land).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import BudgetError
from ..progress import tick

ADDS = {"add.Tensor", "add_.Tensor"}
AFTER = {"relu", "relu_", "hardtanh", "hardtanh_", "silu", "silu_", "gelu", "hardswish", "hardswish_"}


@dataclass(frozen=True)
class ResidualBlock:
    path: str  # the module, e.g. "layer1.0"
    kind: str  # its class name
    add: str  # the add node
    branch: str  # the add's operand computed inside the block (zeroed when the block is removed)
    after: tuple  # (op name, extra args) of the activations after the add

    def to_json(self) -> dict:
        return {"path": self.path, "module": self.kind, "after": [[op, list(args)] for op, args in self.after]}

    @classmethod
    def from_json(cls, data: dict) -> "ResidualBlock":
        """What `apply` needs to remove the same block from another checkpoint."""
        return cls(data["path"], data["module"], "", "", tuple((op, tuple(args)) for op, args in data["after"]))


class Skip(nn.Module):
    """A removed residual block: its input through the activations that followed the add."""

    def __init__(self, after: tuple = (), replaces: str = ""):
        super().__init__()
        self.after, self.replaces = tuple((op.rstrip("_"), tuple(args)) for op, args in after), replaces

    def forward(self, x):
        for op, args in self.after:
            x = getattr(torch.ops.aten, op).default(x, *args)
        return x

    def extra_repr(self) -> str:
        return f"replaces={self.replaces!r}, after={[op for op, _ in self.after]}"


def _op_name(node) -> str:
    """'add_.Tensor' for torch.ops.aten.add_.Tensor."""
    return str(node.target).removeprefix("aten.")


def _scopes(node) -> tuple:
    stack = node.meta.get("nn_module_stack") or {}
    return tuple((path, kind) for path, kind in stack.values())


def residual_blocks(analysis) -> list[ResidualBlock]:
    """Every removable residual block of the traced model, outermost last."""
    tg = analysis.graph.traced
    nodes = [n for n in tg.graph.nodes if n.op == "call_function"]
    inside: dict[str, set] = {}
    for n in nodes:
        for path, _ in _scopes(n):
            inside.setdefault(path, set()).add(n)
    params = {name for name, (kind, _) in tg.placeholders.items() if kind in ("param", "buffer", "constant")}
    shapes = analysis.graph.shapes
    found, seen = [], set()
    for add in nodes:
        if _op_name(add) not in ADDS or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
            continue
        if not all(isinstance(a, torch.fx.Node) for a in add.args):
            continue
        for path, kind in reversed(_scopes(add)):  # the innermost module that is a whole block
            if path in seen or not path:
                continue
            block = _as_block(add, path, kind, inside[path], params, shapes, tg.outputs)
            if block is not None:
                found.append(block)
                seen.add(path)
                break
    return found


def _as_block(add, path, kind, members: set, params: set, shapes: dict, outputs) -> ResidualBlock | None:
    for x, branch in (add.args, add.args[::-1]):
        if x in members or branch not in members or shapes.get(x.name) != shapes.get(add.name):
            continue
        if list(branch.users) != [add]:
            continue
        external = {a for m in members for a in m.all_input_nodes if a not in members and a.name not in params}
        if external != {x}:
            continue
        y, after = add, []
        while True:  # the activations after the add, inside the block
            users = list(y.users)
            nxt = users[0] if len(users) == 1 else None
            if nxt is None or nxt not in members:
                break
            name = _op_name(nxt).split(".")[0]
            if name not in AFTER or nxt.args[0] is not y:
                return None
            after.append((name, tuple(a for a in nxt.args[1:] if not isinstance(a, torch.fx.Node))))
            y = nxt
        leaving = {m for m in members if any(u not in members for u in m.users) or m.name in outputs}
        if leaving != {y} or y.name in outputs or shapes.get(y.name) != shapes.get(x.name):
            continue
        return ResidualBlock(path, kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", "?"),
                             add.name, branch.name, tuple(after))
    return None


def remove_blocks(model: nn.Module, blocks: list) -> nn.Module:
    """A copy of model with each block replaced by its Skip."""
    out = copy.deepcopy(model)
    for b in blocks:
        parent_path, _, name = b.path.rpartition(".")
        parent = out.get_submodule(parent_path) if parent_path else out
        setattr(parent, name, Skip(b.after, b.kind))
    return out


def verify_removal(analysis, removed_model: nn.Module, blocks: list, rtol: float = 1e-4, batches: int = 2) -> dict:
    """The model without the blocks must equal the original with each block's branch output
    zeroed where the add reads it (the traced graph run with that whole tensor masked)."""
    from ..errors import VerificationError
    from ..numerics import max_errors
    from ..graph.masked import random_like, run_masked
    shapes = analysis.graph.shapes
    masks = {}
    for b in blocks:
        shape = shapes[b.branch]
        masks[b.branch] = [(0, torch.arange(shape[0]), torch.zeros(shape[0], dtype=torch.bool))]
    worst = 0.0
    with torch.inference_mode():
        for k in range(batches):
            x = analysis.example_inputs if k == 0 else random_like(analysis.example_inputs, seed=k)
            ref = run_masked(analysis.graph, analysis.model, x, masks)
            got = [t for t in torch.utils._pytree.tree_leaves(removed_model(*x)) if isinstance(t, torch.Tensor)]
            for a, r in zip(got, ref, strict=True):
                worst = max(worst, max_errors(a, r)[1])
    if worst > rtol:
        raise VerificationError(
            f"removing blocks {', '.join(b.path for b in blocks)} does not equal zeroing their branches "
            f"(max relative error {worst:.3g} > {rtol:g}): a bug in block detection; please report it with the model")
    return {"max_rel_err": worst, "rtol": rtol, "batches": batches, "passed": True}


def block_ranking(analysis, blocks: list, cost, widths: dict, scores) -> list:
    """(importance kept inside per unit of latency, block, its cost) at a width plan, cheapest first.

    A block's cost: its kernels (by module scope) at the planned widths. Its importance: what
    its internal groups (every member a parameter of the block) keep at the planned widths."""
    from .allocate import retained
    from .budget import group_values
    from .costs import module_path
    modules = {name for name, _ in analysis.model.named_modules()}
    ranked, values = [], group_values(analysis.graph, analysis.groups, scores)
    for b in blocks:
        prefix = b.path + "."
        cost_b = sum(cost.term(i, widths) for i, t in enumerate(cost.terms)
                     if t.block is not None and (module_path(t.block.nodes[0].name, modules) or "").startswith(prefix))
        value = sum(float(retained(v, [widths.get(g.id, g.width)])[0]) for g, v in zip(analysis.groups, values)
                    if g.members and all(m.startswith(prefix) for m in g.members))
        if cost_b > 0:
            ranked.append((value / cost_b, b, cost_b))
    ranked.sort(key=lambda r: r[0])
    return ranked


class BlockChoice(NamedTuple):
    """What `choose_blocks` decided: the analysis, scores, pricing and budget to plan widths
    with (of the model without the chosen blocks, where any were), and the report's record."""
    analysis: object
    scores: list
    pricing: object
    budget: object
    record: dict


def choose_blocks(analysis, scores, config, budget, pricing, lm, lattice, min_width=None, progress=None,
                  scorer=None) -> BlockChoice:
    """Width-only plan against plans with the k cheapest residual blocks removed (k = 1, 2, 4,
    ...; cheapest: least importance kept inside per unit of cost): the removal is kept where
    the plan for the same budget then retains more importance. The budget is then an absolute
    figure of the original (a speedup is of the original, not of the model without the
    blocks). scorer(analysis) scores each model without blocks; lm is the latency model of a
    latency budget (None for a size budget). BudgetError where neither width nor blocks meet it."""
    from ..analysis import analyze
    from .budget import plan_budget
    from .costs import build_cost_model
    from .pricing import PricedModel

    a = analysis
    tick(progress, "blocks", 0, 1)
    blocks = residual_blocks(a)
    record = {"candidates": [b.path for b in blocks], "tries": [], "removed": [], "verify": None}
    figure = budget.figure(pricing.full_figure)
    cost = build_cost_model(a, pricing.blocks, pricing.kernel_cost, pricing.unit, pricing.full_cost)
    try:
        widths, base = plan_budget(a, scores, budget, pricing, lattice, min_width=min_width,
                                   objective=config.objective)
        best_value, unmet = base["planner"]["retained_importance"], None
    except BudgetError as e:  # width alone cannot meet it: rank the blocks at full width
        widths, best_value, unmet = dict(cost.full), -np.inf, e
    ranked = [b for _, b, _ in block_ranking(a, blocks, cost, widths, scores)]
    record["tries"].append({"removed": 0, "retained_importance": best_value if unmet is None else None})
    best, chosen_best = (a, scores, pricing, budget), []
    k = 1
    while k <= len(ranked):
        chosen = ranked[:k]
        tick(progress, "blocks", k, len(ranked))
        model_k = remove_blocks(a.model, chosen)
        a_k = scorer.bind(analyze(model_k, a.example_inputs, config=config))  # measures on the run's inputs
        scores_k = scorer(a_k)
        pricing_k = budget.pricing(PricedModel.of(a_k), lm, progress)
        budget_k = budget.restated(figure, pricing_k.full_figure)
        try:
            _, rec = plan_budget(a_k, scores_k, budget_k, pricing_k, lattice, min_width=min_width,
                                 objective=config.objective)
        except BudgetError:
            record["tries"].append({"removed": k, "retained_importance": None})
            k *= 2
            continue
        value = rec["planner"]["retained_importance"]
        record["tries"].append({"removed": k, "retained_importance": value})
        if value <= best_value:
            break
        best_value, best, chosen_best = value, (a_k, scores_k, pricing_k, budget_k), chosen
        k *= 2
    if unmet is not None and not chosen_best:
        raise unmet
    if chosen_best:
        record["verify"] = verify_removal(a, best[0].model, chosen_best, config.rtol, config.verify_batches)
        record["removed"] = [b.to_json() for b in chosen_best]
    return BlockChoice(*best, record)
