"""Choose a kept width per group: the most retained importance whose cost fits the budget.

A multiple-choice knapsack whose items interact (a conv's cost depends on the widths of
the group before it and the group after it), solved by greedy descent with exchange:

1. descent: from full width, repeatedly take the one-step cut (to the next narrower
   candidate of one group) that gives up the least importance per unit of cost saved,
   until the cost fits;
2. exchange: repeatedly take the best move that keeps the cost within budget and gains
   importance: one group one step wider (this is what keeps the top of a latency plateau:
   a step that costs nothing is always taken), paid for where needed by the cheapest
   one-step cuts of other groups.

Candidates are lattice widths from the minimum width up, plus the full width; channels are
kept most important first, so a group's retained importance at width w is the sum of its w
largest scores. Costs are computed incrementally: a move re-prices only the kernels the
changed groups size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BudgetError

LOOKAHEAD = 8  # candidates a single descent step may skip

@dataclass(frozen=True)
class Problem:
    candidates: dict  # group id -> ascending widths; the last is the full width
    value: dict  # group id -> retained importance at each candidate
    cost: object  # CostModel: total(widths), delta(widths, changes), neighbours {group: groups it moves}
    names: dict = field(default_factory=dict)  # group id -> what to call it in messages


@dataclass(frozen=True)
class Plan:
    widths: dict
    cost: float
    value: float
    full_cost: float
    moves: int


def retained(scores: np.ndarray, widths: list) -> np.ndarray:
    """Importance kept at each width: the sum of the w largest scores."""
    prefix = np.concatenate([[0.0], np.cumsum(np.sort(np.asarray(scores, dtype=float))[::-1])])
    return prefix[np.asarray(widths, dtype=int)]


def solve(problem: Problem, budget: float, max_moves: int = 100_000, kick_seconds: float = 10.0) -> Plan:
    cands, cost = problem.candidates, problem.cost
    idx = {g: len(c) - 1 for g, c in cands.items()}
    widths = {g: cands[g][i] for g, i in idx.items()}
    full = cost.total(widths)
    eps = 1e-12 * max(abs(full), 1.0)
    total, moves = descend(problem, idx, widths, full, budget, eps, max_moves)
    if total > budget + eps:
        total = cost.total(widths)  # exact, not accumulated
    if total > budget + eps:  # descent stalled: start from every minimum, which fits or nothing does
        idx.update({g: 0 for g in idx})
        widths.update({g: c[0] for g, c in cands.items()})
        total = cost.total(widths)
        if total > budget + eps:
            raise _unmeetable(problem, budget)
    total, gained = _exchange(problem, idx, widths, total, budget, eps, max_moves)
    idx, widths, kicks = _kick(problem, idx, widths, budget, eps, kick_seconds)
    return Plan(dict(widths), cost.total(widths), _value(problem, idx), full, moves + gained + kicks)


def _value(problem: Problem, idx: dict) -> float:
    return float(sum(problem.value[g][i] for g, i in idx.items()))


def descend(problem: Problem, idx: dict, widths: dict, total: float, budget: float, eps: float,
             max_moves: int, fixed=()) -> tuple[float, int]:
    """Cut, the least importance lost per unit of cost saved first. A cut may go several
    candidates down at once (up to LOOKAHEAD, or straight to the minimum): measured costs
    have plateaus and noise, where the next narrower width alone saves nothing. Each group's
    best cut is kept and priced again only when a cut moves a group it shares a kernel with:
    a Llama's MLP groups share none, so a move re-prices one group, not all of them."""
    cands, cost = problem.candidates, problem.cost
    best = {g: _best_cut(problem, idx, widths, g, eps) for g in idx if g not in fixed}
    moves = 0
    while total > budget + eps and moves < max_moves:
        pick = None
        for g, cut in best.items():  # the first group of the least key, as a scan of every cut finds it
            if cut is not None and (pick is None or cut[0] < pick[0]):
                pick = (cut[0], g, cut[1], cut[2])
        if pick is None:
            break
        _, g, j, saved = pick
        idx[g] = j
        widths[g] = cands[g][j]
        total -= saved
        moves += 1
        for h in cost.neighbours.get(g, ()):
            if h in best:
                best[h] = _best_cut(problem, idx, widths, h, eps)
    return total, moves


def _best_cut(problem: Problem, idx: dict, widths: dict, g, eps: float):
    """(importance lost per unit of cost saved, candidate index, cost saved) of group g's best
    cut from where it is, or None where no cut of it saves anything."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    i, best = idx[g], None
    if i == 0:
        return None
    for j in {0, *range(max(0, i - LOOKAHEAD), i)}:
        saved = -cost.delta(widths, {g: cands[g][j]})
        if saved <= eps:
            continue
        key = (value[g][i] - value[g][j]) / saved
        if best is None or key < best[0]:
            best = (key, j, saved)
    return best


def _kick(problem: Problem, idx: dict, widths: dict, budget: float, eps: float, seconds: float):
    """Iterated local search: move one group up to two steps either way, repair (cut others
    until the cost fits) and exchange again; keep what retains more. Bounded in time."""
    cands, cost = problem.candidates, problem.cost
    best_value, kicks = _value(problem, idx), 0
    deadline = time.monotonic() + seconds
    improved = True
    while improved and time.monotonic() < deadline:
        improved = False
        for g in list(idx):
            for j in range(max(0, idx[g] - 2), min(len(cands[g]), idx[g] + 3)):
                if j == idx[g] or time.monotonic() > deadline:
                    continue
                t_idx, t_widths = dict(idx), dict(widths)
                t_idx[g], t_widths[g] = j, cands[g][j]
                total, _ = descend(problem, t_idx, t_widths, cost.total(t_widths), budget, eps, 10_000, fixed={g})
                if total > budget + eps:
                    continue
                _exchange(problem, t_idx, t_widths, total, budget, eps, 10_000)
                v = _value(problem, t_idx)
                if v > best_value + eps and cost.total(t_widths) <= budget + eps:
                    idx, widths, best_value, improved = t_idx, t_widths, v, True
                    kicks += 1
    return idx, widths, kicks


def _exchange(problem: Problem, idx: dict, widths: dict, total: float, budget: float, eps: float,
              max_moves: int) -> tuple[float, int]:
    """Best improving move, repeatedly: one group one step wider, paid for (where it does not
    fit) by the cheapest one-step cuts of other groups, as many as it takes."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    moves = 0
    while moves < max_moves:
        best = None  # (gain, changes, delta cost)
        for g, i in idx.items():
            if i == len(cands[g]) - 1:
                continue
            changes = {g: cands[g][i + 1]}
            gain = value[g][i + 1] - value[g][i]
            d = cost.delta(widths, changes)
            while total + d > budget + eps and gain > eps:
                pay = _cheapest_cut(problem, idx, widths, changes, exclude=g)
                if pay is None:
                    break
                h, lost, d = pay
                changes[h] = cands[h][idx[h] - 1]
                gain -= lost
            if total + d <= budget + eps and gain > eps and (best is None or gain > best[0] + eps):
                best = (gain, changes, d)
        if best is None:
            return total, moves
        _, changes, d = best
        for g, w in changes.items():
            idx[g] = cands[g].index(w)
            widths[g] = w
        total += d
        moves += 1
    return total, moves


def _cheapest_cut(problem: Problem, idx: dict, widths: dict, changes: dict, exclude):
    """(group, importance lost, new delta) of the one-step cut, on top of `changes`, that loses
    the least importance per unit of cost saved."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    base = cost.delta(widths, changes)
    best = None
    for h, i in idx.items():
        if h == exclude or h in changes or i == 0:
            continue
        d = cost.delta(widths, {**changes, h: cands[h][i - 1]})
        saved = base - d
        if saved <= 0:
            continue
        lost = value[h][i] - value[h][i - 1]
        if best is None or lost / saved < best[0]:
            best = (lost / saved, h, lost, d)
    return None if best is None else best[1:]


def _unmeetable(problem: Problem, budget: float) -> BudgetError:
    cost = problem.cost
    widths = {g: c[0] for g, c in problem.candidates.items()}  # the figure at every minimum
    total = cost.total(widths)
    shares = sorted(((cost.term(i, widths), t) for i, t in enumerate(cost.terms)), key=lambda s: -s[0])
    fixed = sum(c for c, t in shares if not t.groups and t.follows is None)
    top = "; ".join(f"{t.name} {c:.3g} {cost.unit}" for c, t in shares[:3])
    by_group = sorted(((sum(cost.term(i, widths) for i in set(terms)), g) for g, terms in cost.by_group.items()
                       if g in widths), key=lambda s: -s[0])
    limiting = "; ".join(f"group {g} ({problem.names.get(g, '?')}) at its minimum {widths[g]} of "
                         f"{problem.candidates[g][-1]} channels: {c:.3g} {cost.unit}" for c, g in by_group[:3])
    return BudgetError(
        f"the budget of {budget:.4g} {cost.unit} cannot be met: with every group at its minimum width the "
        f"best reachable is {total:.4g} {cost.unit} ({fixed:.3g} of it in kernels no prunable group sizes). "
        f"The groups that limit it: {limiting or 'none (no prunable group sizes a priced kernel)'}. "
        f"The most expensive kernels then are: {top}. Ask for less, lower --min-width, or unfreeze groups "
        "(`hwprune analyze --explain` says why each is frozen)")
