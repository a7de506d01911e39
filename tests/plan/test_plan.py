"""The budgeted planner: against exhaustive search on small instances, monotone in the
budget, widths on the lattice, an unmeetable budget named, and budgets end to end."""
from __future__ import annotations

import functools
import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import hwprune
from hwprune.cli import main
from hwprune.hardware import get_target
from hwprune.plan.allocate import LOOKAHEAD, BudgetError, Problem, descend, retained, solve
from hwprune.hardware.lattice import lattice_for
from hwprune.plan.budget import OBJECTIVES, Budget, candidates, plan_budget
from hwprune.plan.kinds import BUDGET_KINDS
from hwprune.plan.pricing import PricedModel


class ChainCost:
    """Synthetic conv chain: kernel i costs a_i * pad(w_i) * pad(w_i+1) (a staircase: widths
    pad up to 8, as a GPU tile would), plus a first kernel that sees only group 0."""
    unit = "units"

    def __init__(self, coeffs, first):
        self.coeffs, self.first = coeffs, first
        self.terms, self.by_group = [], {}  # no kernel terms: the whole cost is one formula
        n = len(coeffs) + 1  # kernel i couples groups i and i + 1: a cut of g moves its neighbours' deltas
        self.neighbours = {g: {h for h in (g - 1, g, g + 1) if 0 <= h < n} for g in range(n)}

    @staticmethod
    def pad(w):
        return math.ceil(w / 8) * 8

    def total(self, w):
        n = len(self.coeffs) + 1
        return self.first * self.pad(w[0]) + sum(a * self.pad(w[i]) * self.pad(w[i + 1]) / 64
                                                 for i, a in enumerate(self.coeffs) if i + 1 < n)

    def delta(self, w, changes):
        return self.total({**w, **changes}) - self.total(w)


def _problem(data):
    n = data.draw(st.integers(2, 4))
    widths = [data.draw(st.sampled_from([16, 24, 32])) for _ in range(n)]
    cands = {g: candidates(w, get_target("jetson").lattice, None) for g, w in enumerate(widths)}
    scores = {g: [data.draw(st.floats(0.01, 10)) for _ in range(w)] for g, w in enumerate(widths)}
    value = {g: retained(scores[g], cands[g]) for g in cands}
    cost = ChainCost([data.draw(st.floats(0.5, 5)) for _ in range(n - 1)], data.draw(st.floats(0.0, 1.0)))
    return Problem(cands, value, cost)


def test_the_counterexample_ci_found_is_within_one_percent():
    """Found by the property below in CI (2026-12-03) and kept as a row: four groups of 16, a
    chain costed 1, 3, 1, a budget of 17.5 of the full 20. Halving group 0 or group 3 alone
    (cost 18) misses the budget; halving both (16) meets it and keeps 98 of 114. The planner
    once kept 97 (group 1 halved, 12): its exchange paid for widening group 1 again with the
    cheapest cut per unit saved (group 2), never with the one that just pays and loses less."""
    groups = [[1.0] * 16, [1.0] * 3 + [2.0] + [3.0] * 12, [1.0] * 3 + [2.0] + [3.0] * 12, [1.0] * 16]
    cands = {g: candidates(16, get_target("jetson").lattice, None) for g in range(4)}
    problem = Problem(cands, {g: retained(s, cands[g]) for g, s in enumerate(groups)}, ChainCost([1.0, 3.0, 1.0], 0.0))
    budget = 0.875 * problem.cost.total({g: c[-1] for g, c in cands.items()})
    optimum = _exhaustive(problem, budget)
    assert optimum == 98.0
    plan = solve(problem, budget)
    assert plan.cost <= budget and plan.value >= 0.99 * optimum, plan


def _exhaustive(problem, budget):
    best = None
    groups = list(problem.candidates)
    for combo in itertools.product(*(range(len(problem.candidates[g])) for g in groups)):
        w = {g: problem.candidates[g][i] for g, i in zip(groups, combo)}
        if problem.cost.total(w) <= budget + 1e-9:
            v = sum(problem.value[g][i] for g, i in zip(groups, combo))
            best = v if best is None else max(best, v)
    return best


@settings(max_examples=60, deadline=None)
@given(data=st.data(), fraction=st.floats(0.3, 0.95))
def test_within_one_percent_of_exhaustive_search(data, fraction):
    problem = _problem(data)
    full = problem.cost.total({g: c[-1] for g, c in problem.candidates.items()})
    budget = full * fraction
    optimum = _exhaustive(problem, budget)
    if optimum is None:
        with pytest.raises(BudgetError):
            solve(problem, budget)
        return
    plan = solve(problem, budget)
    assert plan.cost <= budget + 1e-9
    assert plan.value >= 0.99 * optimum, (plan, optimum, problem.candidates, problem.value, problem.cost.coeffs, problem.cost.first)


def _scan_descend(problem, idx, widths, total, budget, eps=1e-12):
    """The descent as it was before it kept each group's best cut: every cut of every group
    priced again at each move."""
    cands, value, cost = problem.candidates, problem.value, problem.cost
    moves = 0
    while total > budget + eps:
        best = None
        for g, i in idx.items():
            for j in ({0, *range(max(0, i - LOOKAHEAD), i)} if i else ()):
                saved = -cost.delta(widths, {g: cands[g][j]})
                if saved > eps and (best is None or (value[g][i] - value[g][j]) / saved < best[0]):
                    best = ((value[g][i] - value[g][j]) / saved, g, j, saved)
        if best is None:
            break
        _, g, j, saved = best
        idx[g], widths[g], total, moves = j, cands[g][j], total - saved, moves + 1
    return total, moves


@settings(max_examples=40, deadline=None)
@given(data=st.data(), fraction=st.floats(0.2, 0.95))
def test_the_descent_cuts_as_a_scan_of_every_cut_does(data, fraction):
    problem = _problem(data)
    full_idx = {g: len(c) - 1 for g, c in problem.candidates.items()}
    full_widths = {g: c[-1] for g, c in problem.candidates.items()}
    full = problem.cost.total(full_widths)
    kept, scanned = (dict(full_idx), dict(full_widths)), (dict(full_idx), dict(full_widths))
    (total, moves), (want_total, want_moves) = (descend(problem, *kept, full, full * fraction, 1e-12, 10_000),
                                                _scan_descend(problem, *scanned, full, full * fraction))
    assert kept == scanned and moves == want_moves
    # the same cuts; ChainCost's delta is a difference of whole totals, whose rounding depends on
    # when it was taken (a CostModel's sums only the kernels the group sizes)
    assert total == pytest.approx(want_total, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), a=st.floats(0.3, 1.0), b=st.floats(0.3, 1.0))
def test_a_tighter_budget_never_keeps_more_cost(data, a, b):
    problem = _problem(data)
    full = problem.cost.total({g: c[-1] for g, c in problem.candidates.items()})
    tight, loose = sorted((a * full, b * full))
    try:
        plan_tight = solve(problem, tight)
    except BudgetError:
        return
    plan_loose = solve(problem, loose)
    assert plan_tight.cost <= tight + 1e-9 and plan_loose.cost <= loose + 1e-9
    assert plan_tight.value <= plan_loose.value + 1e-9


@pytest.mark.parametrize("width, multiple, min_width, expected", [
    (64, 8, None, [8, 16, 24, 32, 40, 48, 56, 64]),
    (70, 8, None, [8, 16, 24, 32, 40, 48, 56, 64, 70]),  # the full width is always a candidate
    (64, 16, 20, [32, 48, 64]),
    (6, 8, None, [6]),  # narrower than one step: stays
])
def test_candidates_are_lattice_widths_from_the_minimum(width, multiple, min_width, expected):
    class Lat:
        pass
    lat = Lat()
    lat.multiple = multiple
    assert candidates(width, lat, min_width) == expected


def test_unmeetable_budget_names_the_best_reachable_figure():
    problem = Problem({0: [8, 16], 1: [8, 16]}, {0: [1.0, 2.0], 1: [1.0, 2.0]}, ChainCost([1.0], 1.0))
    with pytest.raises(BudgetError, match="best reachable is 9 units"):
        solve(problem, 1.0)


@pytest.mark.parametrize("kind, value", [("speedup", 0.5), ("flops", 0.0), ("params", 1.5), ("latency_ms", -1)])
def test_bad_budgets_say_what_to_give(kind, value):
    with pytest.raises(hwprune.InputError, match="out of range: give"):
        Budget(kind, value)


# ---------------------------------------------------------------- end to end on small nets

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(),
                                  nn.Conv2d(48, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU())
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def _net(size=32):
    torch.manual_seed(0)
    return Net().eval(), (torch.randn(1, 3, size, size),)


def test_flops_budget_lands_under_and_widths_sit_on_the_lattice():
    model, x = _net()
    slim, report = hwprune.slim(model, x, flops=0.5, target="jetson")
    plan = report["plan"]
    assert plan["planner"]["cost_after"] <= 0.5 * plan["full"] * (1 + 1e-9)
    assert report["verify"]["passed"]
    for g in plan["groups"]:
        w = g["width_after"]
        assert w == g["width_before"] or w % 8 == 0, g
    assert sum(g["share_of_saving"] for g in plan["groups"]) == pytest.approx(1.0, abs=1e-3)


def test_speedup_on_the_analytic_model_lands_where_asked():
    model, x = _net(224)  # at 32x32 every kernel is launch-bound: no width buys 1.5x
    slim, report = hwprune.slim(model, x, speedup=1.5, target="jetson-orin-nano")
    plan = report["plan"]
    assert plan["predicted_after"] <= plan["requested"] * 1.01
    assert plan["requested"] == pytest.approx(plan["predicted_before"] / 1.5)


def test_a_speedup_stated_against_a_reference_divides_the_reference_latency():
    """A model already cut, asked for 1.5x over the original it came from (iterative slim's
    later rounds): the goal is the original's latency over 1.5, not the cut model's."""
    model, x = _net(224)
    once, _ = hwprune.slim(model, x, flops=0.8, target="jetson-orin-nano", importance="l2")
    _, alone = hwprune.slim(model, x, speedup=1.5, target="jetson-orin-nano", importance="l2")
    _, again = hwprune.slim(once, x, speedup=1.5, target="jetson-orin-nano", importance="l2", reference=model)
    plan = again["plan"]
    assert plan["predicted_before"] == pytest.approx(alone["plan"]["predicted_before"])  # the original's
    assert plan["requested"] == pytest.approx(plan["predicted_before"] / 1.5)
    assert plan["full"] < plan["predicted_before"]  # what was planned on: the cut model
    assert plan["predicted_after"] <= plan["requested"] * 1.01 and again["verify"]["passed"]


@pytest.mark.parametrize("reference, budget, said", [
    ("orig.pt", {"speedup": 1.5}, "reference str: give the nn.Module the budget is stated against"),
    (None, {"flops": 0.5}, "a reference model was given with --flops 0.5: a reference is for a latency budget"),
])
def test_a_reference_that_is_not_a_model_or_meets_a_size_budget_is_refused(reference, budget, said):
    model, x = _net()
    with pytest.raises(hwprune.InputError, match=said):
        hwprune.slim(model, x, target="jetson-orin-nano", reference=model if reference is None else reference,
                     **budget)


@pytest.mark.parametrize("slack, ended", [
    (0.10, "landed within 1% above and 10% below the goal"),
    # 8% faster than asked is outside a 2% slack: the re-plan finds no lattice step nearer
    (0.02, "a re-plan gave an earlier try's widths: the lattice has no step nearer the goal"),
])
def test_the_landing_slack_says_how_far_below_the_goal_the_tries_may_stop(slack, ended):
    model, x = _net(224)
    _, report = hwprune.slim(model, x, speedup=1.5, target="jetson-orin-nano", landing_slack=slack, importance="l2")
    plan = report["plan"]
    assert plan["tries_ended"] == ended
    assert plan["predicted_after"] == pytest.approx(0.92 * plan["requested"], abs=0.01 * plan["requested"])


@pytest.mark.parametrize("importance, short_for, kept, warns", [
    ("auto", {"fisher"}, "l2", False),  # the default falls back to the weights' plan, which met the budget
    ("auto", {"fisher", "l2"}, "fisher", True),  # neither met it: the nearer is kept, with the warning
    ("fisher", {"fisher"}, "fisher", True),  # a criterion given by name is kept: the warning says so
])
def test_a_budget_that_lands_short_warns_and_auto_falls_back_to_the_weights(land_short, importance, short_for,
                                                                            kept, warns):
    import warnings
    model, x = _net(224)
    land_short(short_for)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = hwprune.slim(model, x, speedup=1.5, target="jetson-orin-nano", importance=importance)
    said = [str(w.message) for w in caught if issubclass(w.category, hwprune.BudgetWarning)]
    assert report["config"]["importance"] == kept and report["plan"]["met"] is not warns
    assert bool(said) == warns, said
    if warns:
        assert "--speedup 1.5: the slim model lands at" in said[0] and "It is kept and verified" in said[0]
    if importance == "auto":  # what it chose, and where both plans landed
        assert report["config"]["importance_auto"].startswith("l2: auto's fisher plan landed short") if not warns \
            else "and the weights' plan no nearer" in report["config"]["importance_auto"]


@pytest.mark.parametrize("slack", [-0.1, 1.0, 1.5])
def test_a_landing_slack_outside_zero_to_one_is_refused(slack):
    model, x = _net()
    with pytest.raises(hwprune.InputError, match=rf"landing_slack {slack}: give a fraction of the goal from 0"):
        hwprune.slim(model, x, speedup=1.5, target="jetson-orin-nano", landing_slack=slack)


def test_an_unreachable_speedup_says_the_best_reachable_and_the_costly_kernels():
    model, x = _net()
    with pytest.raises(BudgetError, match=r"best reachable is .* ms .*groups that limit it: group \d+ \(.*weight:\d.*\) at its minimum \d+ of \d+ channels.*most expensive kernels then are: Conv"):
        hwprune.slim(model, x, speedup=1.5, target="jetson-agx-orin")


def test_two_budgets_are_refused():
    model, x = _net()
    with pytest.raises(hwprune.InputError, match="give exactly one budget"):
        hwprune.slim(model, x, ratio=0.5, speedup=2.0)


def test_cli_speedup_writes_the_plan_into_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    assert main(["slim", "models_for_cli:tiny_convnet", "--flops", "0.6", "--report", "r.json", "-o", "s.pt"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["budget"] == {"flops": 0.6} and report["plan"]["groups"]


def _plan_under(isa: str, monkeypatch, **kwargs) -> dict:
    from conftest import ISAS
    from hwprune.hardware import processor
    monkeypatch.setattr(processor, "lattice_isa", lambda: ISAS[isa])
    model, x = _net()
    return hwprune.slim(model, x, **kwargs)[1]["plan"]


def test_a_flops_budget_without_a_target_plans_the_same_on_every_host(monkeypatch):
    plans = {isa: _plan_under(isa, monkeypatch, flops=0.5) for isa in ("avx2", "avx512")}
    widths = {isa: [g["width_after"] for g in p["groups"]] for isa, p in plans.items()}
    assert widths["avx2"] == widths["avx512"] and any(w % 16 for w in widths["avx2"])
    assert plans["avx2"]["lattice"] == {"multiple": 8, "from": "portable (no target given)"}
    assert plans["avx2"]["target"] is None


def test_a_flops_budget_on_the_cpu_target_follows_the_pinned_lattice(cpu_isa, monkeypatch):
    plan = _plan_under(cpu_isa, monkeypatch, flops=0.5, target="cpu")
    multiple = {"avx2": 8, "avx512": 16}[cpu_isa]
    assert plan["lattice"]["multiple"] == multiple and plan["target"] == "cpu"
    assert all(g["width_after"] % multiple == 0 for g in plan["groups"])


def test_a_budget_that_only_the_lattice_blocks_says_so(monkeypatch):
    from conftest import ISAS
    from hwprune.hardware import processor
    monkeypatch.setattr(processor, "lattice_isa", lambda: ISAS["avx512"])
    model, x = _net()
    with pytest.raises(BudgetError, match=r"only because widths sit on the lattice of % 16 \(target cpu on this "
                                          r"host \(avx2, avx512f\)\).*Give --target with a finer lattice"):
        hwprune.slim(model, x, flops=0.05, target="cpu")
    with pytest.raises(BudgetError) as e:  # one channel a group does not fit either: no lattice sentence
        hwprune.slim(model, x, flops=0.0001, target="cpu")
    assert "lattice" not in str(e.value)


@pytest.mark.parametrize("flags, said", [
    (["--speedup", "0.5"], "--speedup 0.5 is out of range"),
    (["--speedup", "1.5", "--landing-slack", "1"], "--landing-slack 1.0: give a fraction of the goal from 0 to below 1"),
])
def test_cli_refuses_a_speedup_below_one_and_a_slack_outside_zero_to_one(tmp_path, monkeypatch, capsys, flags, said):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", "models_for_cli:tiny_convnet", *flags]) == 2
    assert said in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tries, picked", [
    ([{"landed_ms": 11.0, "goal_ms": 10.0}, {"landed_ms": 9.0, "goal_ms": 10.0}], 1),  # the miss is dropped
    ([{"landed_ms": 8.0, "goal_ms": 10.0}, {"landed_ms": 9.9, "goal_ms": 10.0}], 1),  # least to spare
    ([{"landed_ms": 10.05, "goal_ms": 10.0}, {"landed_ms": 9.0, "goal_ms": 10.0}], 0),  # 1% tolerance
    ([{"landed_ms": 12.0, "goal_ms": 10.0}, {"landed_ms": 11.0, "goal_ms": 10.0}], 1),  # none met: nearest
    ([{"landed_ms": 12.0, "goal_ms": 10.0}, {"landed_ms": 12.0, "goal_ms": 11.0}], 1),  # nearest, relative
])
def test_the_landing_check_keeps_the_try_that_meets_the_budget_with_least_to_spare(tries, picked):
    from hwprune.plan.land import pick_try
    assert pick_try(tries) == picked


@given(full=st.floats(50, 200), frac=st.floats(0.2, 0.9), fixed=st.floats(0, 20), goal_frac=st.floats(0.3, 0.95))
def test_the_replan_step_follows_the_line_within_a_fifth_of_the_proportional_step(full, frac, fixed, goal_frac):
    # latency = cost + fixed (a part no kernel accounts for): the line through the two points
    # lands exactly; noise cannot push the step more than 20% off the proportional one
    from hwprune.plan.land import secant
    cost = full * frac
    goal = (full + fixed) * goal_frac
    limit = secant(full, full + fixed, cost, cost + fixed, goal)
    step = cost * goal / (cost + fixed)
    exact = goal - fixed
    assert limit == pytest.approx(min(max(exact, 0.8 * step), 1.2 * step), rel=1e-6)
    if 0.8 * step <= exact <= 1.2 * step:
        assert limit == pytest.approx(exact, rel=1e-6)


def test_a_noisy_replan_step_stays_near_the_proportional_one():
    from hwprune.plan.land import secant
    # the slim model measured barely faster than the original: the line would ask for cost <= 0
    assert secant(100.0, 92.0, 60.0, 90.0, 61.0) == pytest.approx(0.8 * 60.0 * 61.0 / 90.0)


@pytest.mark.parametrize("node, path", [
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/features/features.3/conv/conv.0/conv.0.0/Conv", "features.3.conv.0.0"),
    ("/encoder/encoder/layer.0/attention/self/query/MatMul/MatMulAddFusion", "encoder.encoder.layer.0.attention.self.query"),
    ("/encoder/encoder/layer.0/intermediate/dense/Gemm", "encoder.encoder.layer.0.intermediate.dense"),
    ("/Unsqueeze", None),
])
def test_kernels_are_tied_to_the_module_that_owns_their_weight(node, path):
    from hwprune.plan.costs import module_path
    modules = {"layer1", "layer1.0", "layer1.0.conv1", "features", "features.3", "features.3.conv",
               "features.3.conv.0", "features.3.conv.0.0", "encoder", "encoder.encoder", "encoder.encoder.layer",
               "encoder.encoder.layer.0", "encoder.encoder.layer.0.attention", "encoder.encoder.layer.0.attention.self",
               "encoder.encoder.layer.0.attention.self.query", "encoder.encoder.layer.0.intermediate",
               "encoder.encoder.layer.0.intermediate.dense"}
    assert module_path(node, modules) == path


@pytest.mark.host_isa  # measures this host
def test_kernels_are_priced_at_their_time_inside_the_model(tmp_path):
    # a kernel timed alone keeps its weights in cache: each is scaled to its time in place
    from hwprune.export.onnx import onnx_graph
    from hwprune.hardware.latency import MeasuredLatency, in_place
    from hwprune.hardware.lut import LatencyTable
    from hwprune.hardware.measure import OrtRuntime, OrtSettings
    from hwprune.plan.pricing import latency_pricing
    from hwprune.plan.costs import full_channels

    class Alone(OrtRuntime):
        nodes = None  # kernels as timed alone

    class ThriceInPlace(OrtRuntime):
        def nodes(self, g):
            return {b.name: 3 * alone.full_cost(b) for b in alone.blocks}

    model, x = _net()
    graph = onnx_graph(model, x)
    fast, cpu = OrtSettings(threads=1, warmup_s=0.005, max_s=0.05, min_repeats=5), get_target("cpu")
    table = LatencyTable(OrtRuntime(cpu, fast).identity(), path=tmp_path / "lut.json")
    alone = latency_pricing(MeasuredLatency(table, Alone(cpu, fast)), graph)
    convs = [b for b in alone.blocks if full_channels(b) != (0, 0)]
    real = in_place(MeasuredLatency(table, OrtRuntime(cpu, fast)), graph, alone.blocks)
    assert convs and all(b.name in real for b in convs)  # NCHWc convs are found by their output's name
    placed = latency_pricing(MeasuredLatency(table, ThriceInPlace(cpu, fast)), graph)
    for b in convs:
        ci, co = full_channels(b)
        assert placed.full_cost(b) == pytest.approx(3 * alone.full_cost(b))
        assert placed.kernel_cost(b, ci, co // 2) == pytest.approx(3 * alone.kernel_cost(b, ci, co // 2))
    # a budget in ms maps onto the in-place kernel sum: the original's figure is all of it
    assert placed.to_internal(placed.full_figure) == pytest.approx(sum(placed.full_cost(b) for b in placed.blocks))
    assert "inside the model" in placed.source and "inside" not in alone.source


# ---------------------------------------------------------------- the objective

def test_every_objective_has_a_row():
    assert sorted(OBJECTIVE_CASES) == sorted(OBJECTIVES)


# objective: the narrowest kept fraction of any group of Net at flops=0.5 on jetson's lattice, bounds
OBJECTIVE_CASES = {
    "balanced": (0.5, 1.0),  # halving any group costs the same log 2: none goes below half
    "params": (0.0, 0.25),  # the last conv owns 576 weights a channel against 27..432 of the first: gutted
    "share": (0.5, 1.0),  # flat importance puts its optimum at one kept fraction for all: near uniform
}


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_CASES))
def test_objective_row(objective):
    low, high = OBJECTIVE_CASES[objective]
    model, x = _net()
    slim, report = hwprune.slim(model, x, flops=0.5, target="jetson", objective=objective, importance="l2")
    plan = report["plan"]
    narrowest = min(g["width_after"] / g["width_before"] for g in plan["groups"])
    assert low <= narrowest <= high, plan["groups"]
    assert plan["planner"]["objective"] == objective and report["config"]["objective"] == objective
    assert plan["planner"]["cost_after"] <= 0.5 * plan["full"] * (1 + 1e-9) and report["verify"]["passed"]


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_CASES))
@given(scores=st.lists(st.floats(0, 10), min_size=2, max_size=40), seed=st.integers(0, 3))
@settings(max_examples=30, deadline=None)
def test_objective_values_grow_with_width_and_peak_at_full(objective, scores, seed):
    model, x = _net()
    a = _analysis()
    g = a.prunable[seed % len(a.prunable)]
    s = np.resize(np.asarray(scores), g.width)
    cands = list(range(1, g.width + 1))
    v = OBJECTIVES[objective](a.graph, g, s, cands, 0.3)
    assert np.all(np.diff(v) >= -1e-9) and v[-1] == max(v)


class TwoBranches(nn.Module):
    """Two hidden groups, 64 and 256 wide, each between fixed sizes: each one's cost is linear in
    its width, and the wide one owns 4/5 of the model's."""
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
        self.b = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 32))

    def forward(self, x):
        return self.a(x) + self.b(x)


# kept fraction of each branch at half the flops, with every channel's importance alike
@pytest.mark.parametrize("objective, narrow, wide", [
    ("share", (0.45, 0.55), (0.45, 0.55)),  # one fraction for all: a uniform cut
    ("balanced", (0.9, 1.0), (0.3, 0.4)),  # a cost in proportion to connections: the wide branch pays
])
def test_flat_importance_cuts_linear_cost_groups_uniformly_under_share(objective, narrow, wide):
    torch.manual_seed(0)
    a = hwprune.analyze(TwoBranches().eval(), (torch.randn(2, 32),))
    flat = [np.ones(g.width) for g in a.groups]
    pricing = BUDGET_KINDS["flops"].pricing(PricedModel.of(a))
    widths, record = plan_budget(a, flat, Budget("flops", 0.5), pricing, lattice_for(None)[0], objective=objective)
    kept = {g.width: widths[g.id] / g.width for g in a.groups if g.id in widths}
    assert sorted(kept) == [64, 256] and record["planner"]["cost_after"] <= 0.5 * record["full"] * (1 + 1e-9)
    assert narrow[0] <= kept[64] <= narrow[1] and wide[0] <= kept[256] <= wide[1], kept


@functools.cache
def _analysis():
    model, x = _net()
    return hwprune.analyze(model, x)


def test_an_unknown_objective_names_the_choices():
    model, x = _net()
    with pytest.raises(hwprune.InputError, match="objective 'flops' is unknown: choose one of balanced, params, share"):
        hwprune.slim(model, x, flops=0.5, objective="flops")


# ---------------------------------------------------------------- --ratio on the lattice

def test_a_ratio_with_a_target_snaps_every_width_to_its_lattice(cpu_isa):
    model, x = _net()
    slim, report = hwprune.slim(model, x, ratio=0.2, target="cpu")
    multiple = {"avx2": 8, "avx512": 16}[cpu_isa]
    widths = [g["width_after"] for g in report["groups"] if g["frozen"] is None]
    assert all(w % multiple == 0 for w in widths) and widths != [48, 64, 40], widths
    assert report["lattice"] == {"multiple": multiple, "from": f"target cpu on this host "
                                 f"({'avx2, avx512f' if cpu_isa == 'avx512' else 'avx2'})",
                                 "snapped": True, "off_lattice": []}
    assert report["verify"]["passed"]


def test_a_ratio_without_a_target_keeps_its_widths_and_warns_off_the_lattice():
    model, x = _net()
    with pytest.warns(UserWarning, match=r"ratio 0.2 leaves 2 group\(s\) off the lattice of % 8.*Give a target"):
        slim, report = hwprune.slim(model, x, ratio=0.2)
    assert [g["width_after"] for g in report["groups"] if g["frozen"] is None] == [39, 52, 32]
    assert report["lattice"]["snapped"] is False and len(report["lattice"]["off_lattice"]) == 2
