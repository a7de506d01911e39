"""Choose a kept width per group: the most retained importance whose cost fits the budget.

A multiple-choice knapsack whose items interact (a conv's cost depends on the widths of
the group before it and the group after it), solved by greedy descent with exchange:

1. descent: from full width, repeatedly take the one-step cut (to the next narrower
   candidate of one group) that gives up the least importance per unit of cost saved,
   until the cost fits;
2. exchange: repeatedly take the best move that keeps the cost within budget and gains
   importance: one group one step wider (this is what keeps the top of a latency plateau:
   a step that costs nothing is always taken), paid for where needed by one-step cuts of
   other groups, the cheapest per unit of cost saved, as many as it takes, or ending with the
   one that loses least of those that pay the rest alone: whichever keeps more.

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
    until the cost fits) and exchange again; keep what retains more. Where no such move
    helps, move two groups that share a kernel one step each (a plan that needs both ends of
    a kernel changed together is out of reach of one group's move), and go back to single
    moves after one that helps. Bounded in time."""
    cands, cost = problem.candidates, problem.cost
    best_value, kicks = _value(problem, idx), 0
    deadline = time.monotonic() + seconds
    pairs = False
    while time.monotonic() < deadline:
        improved = False
        for move in _kick_moves(problem, idx, pairs):
            if time.monotonic() > deadline:
                break
            at = {g: idx[g] + step for g, step in move}
            if any(not 0 <= j < len(cands[g]) for g, j in at.items()):
                continue
            t_idx, t_widths = dict(idx), dict(widths)
            for g, j in at.items():
                t_idx[g], t_widths[g] = j, cands[g][j]
            total, _ = descend(problem, t_idx, t_widths, cost.total(t_widths), budget, eps, 10_000, fixed=set(at))
            if total > budget + eps:
                continue
            _exchange(problem, t_idx, t_widths, total, budget, eps, 10_000)
            v = _value(problem, t_idx)
            if v > best_value + eps and cost.total(t_widths) <= budget + eps:
                idx, widths, best_value, improved = t_idx, t_widths, v, True
                kicks += 1
        if improved:
            pairs = False
        elif pairs:
            break
        else:
            pairs = True
    return idx, widths, kicks


def _kick_moves(problem: Problem, idx: dict, pairs: bool) -> list:
    """The kicks to try, each ((group, steps), ...) from where the groups are: one group two
    steps either way, or (pairs) two groups that share a kernel one step each."""
    if not pairs:
        return [((g, step),) for g in idx for step in (-2, -1, 1, 2)]
    neighbours = problem.cost.neighbours
    return [((g, a), (h, b)) for g in idx for h in sorted(neighbours.get(g, ()), key=str)
            if h in idx and str(h) > str(g) for a in (-1, 1) for b in (-1, 1)]


def _exchange(problem: Problem, idx: dict, widths: dict, total: float, budget: float, eps: float,
              max_moves: int) -> tuple[float, int]:
    """Best improving move, repeatedly: one group one step wider, paid for (where it does not
    fit) by one-step cuts of other groups, as many as it takes (`_paid`)."""
    cands = problem.candidates
    moves = 0
    while moves < max_moves:
        best = None  # (gain, changes, delta cost)
        for g, i in idx.items():
            if i == len(cands[g]) - 1:
                continue
            for finish in (False, True):
                move = _paid(problem, idx, widths, g, total, budget, eps, finish)
                if move is not None and (best is None or move[0] > best[0] + eps):
                    best = move
        if best is None:
            return total, moves
        _, changes, d = best
        for g, w in changes.items():
            idx[g] = cands[g].index(w)
            widths[g] = w
        total += d
        moves += 1
    return total, moves


def _paid(problem: Problem, idx: dict, widths: dict, g, total: float, budget: float, eps: float, finish: bool):
    """(importance gained, changes, delta cost) of group g one step wider, paid for by the
    cheapest one-step cuts of other groups per unit of cost saved until it fits; with
    `finish`, the last of them is the one that loses least of those that pay the rest alone.
    None where it gains nothing or cannot be paid for. Either rule alone misses plans the
    other finds (by ratio alone, four groups of 16 on a chain costed 1, 3, 1 at 87.5% of its
    cost kept 97 where 98 fits), so the exchange weighs both."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    i = idx[g]
    changes = {g: cands[g][i + 1]}
    gain = value[g][i + 1] - value[g][i]
    d = cost.delta(widths, changes)
    while total + d > budget + eps and gain > eps:
        pay = _cheapest_cut(problem, idx, widths, changes, exclude=g,
                            need=total + d - budget - eps if finish else None)
        if pay is None:
            return None
        h, lost, d = pay
        changes[h] = cands[h][idx[h] - 1]
        gain -= lost
    return (gain, changes, d) if total + d <= budget + eps and gain > eps else None


def _cheapest_cut(problem: Problem, idx: dict, widths: dict, changes: dict, exclude, need: float | None = None):
    """(group, importance lost, new delta) of the one-step cut, on top of `changes`, that loses
    the least importance per unit of cost saved; given `need`, of the cuts that save that much
    alone the one that loses least, where there is one."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    base = cost.delta(widths, changes)
    by_ratio = enough = None
    for h, i in idx.items():
        if h == exclude or h in changes or i == 0:
            continue
        d = cost.delta(widths, {**changes, h: cands[h][i - 1]})
        saved = base - d
        if saved <= 0:
            continue
        lost = value[h][i] - value[h][i - 1]
        if by_ratio is None or lost / saved < by_ratio[0]:
            by_ratio = (lost / saved, h, lost, d)
        if need is not None and saved >= need and (enough is None or lost < enough[0]):
            enough = (lost, h, lost, d)
    best = enough or by_ratio
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
