"""Landing a budget: plan widths for it, cut, and check where the slim model lands.

For a latency budget the check is a measurement where the target runs here (original and
slim end to end, interleaved), else the slim model's own prediction. A miss re-plans: the
planner's limit on the kernels' cost moves along the line through the original and the last
try (kernel cost against landed latency), since the part of the run time that no kernel
accounts for does not shrink with the widths (`secant`). The try that meets the budget with
the least to spare is kept (`pick_try`). A MAC or parameter budget is exact and planned once.

Before the tries: with allow_block_removal, residual blocks are weighed against width
(hwprune.plan.depth.choose_blocks); with figures measured on the model itself (Fisher),
the budget is approached in rounds that score again on the model cut so far (`rescored`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..errors import BudgetError, InputError
from ..hardware.lattice import lattice_for
from ..progress import tick
from ..verify.repair import cut_verified
from . import Plan, plan_widths
from .depth import choose_blocks

RESCORE_ROUNDS = 3


@dataclass(frozen=True)
class LandingConfig:
    """Where and how a budget is landed (hwprune.slim's keywords of the same names).

    target: the hardware target's name (a latency budget without one: "cpu", this machine;
    a MAC or parameter budget without one plans on the portable lattice). lut: a latency
    table file. threads: onnxruntime's threads on cpu. min_width: the narrowest a group may
    become. allow_block_removal: weigh removing residual blocks whole against width.
    attempts: the most plans tried for a latency budget. slack: how far below its goal (a
    fraction of it) a measured landing may come and still end the tries; a landing faster than
    that re-plans for less cut, as one more than 1% slower re-plans for more.
    reference: the model (same example inputs) a latency budget is stated against, instead of
    the model cut: a speedup divides its latency, and a measured landing times it in the same
    run as the cut model (iterative slim's later rounds give the original, so that each round's
    goal and the measured speedup are ratios within one run, whatever the machine did between)."""
    target: str | None = None
    lut: str | None = None
    threads: int = 1
    min_width: int | None = None
    allow_block_removal: bool = False
    attempts: int = 4
    slack: float = 0.10
    reference: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_slack(self.slack, "landing_slack")


def check_slack(slack: float, name: str) -> None:
    """InputError unless `slack` (given as `name`) is a fraction of the goal in [0, 1)."""
    if not 0 <= slack < 1:
        raise InputError(f"{name} {slack}: give a fraction of the goal from 0 to below 1 "
                         "(0.10 keeps a landing up to 10% faster than asked)")


class RescoreRound(NamedTuple):
    """One round of `rescored`: the budget it planned for, the channels that plan cut (a bool
    per channel label), and the figures measured again on the model with them cut (those cut
    scoring 0): the figures the next round, or the landing, plans with."""
    index: int  # 1 .. RESCORE_ROUNDS - 1
    budget: object  # hwprune.plan.kinds.Budget
    removed: np.ndarray
    scores: list

    def to_json(self) -> dict:
        return {"budget": {self.budget.kind: round(self.budget.value, 4)}, "channels_cut": int(self.removed.sum())}


@dataclass
class _Site:
    """What the tries are planned and checked against."""
    target: object  # hwprune.hardware.Target, or None
    lattice: object
    lattice_from: str
    # hwprune.plan.pricing.PricedModel of the model the budget is stated against: the original, or
    # LandingConfig.reference (its .onnx: the graph a landing times beside the cut model)
    priced: object
    lm: object  # the latency model of a latency budget, else None
    pricing: object  # hwprune.plan.pricing.Pricing of that model

    @property
    def measures(self) -> bool:
        return self.lm is not None and getattr(self.lm, "runtime", None) is not None


def land(a, scores, config, budget, how: LandingConfig = LandingConfig(), scorer=None, progress=None,
         on_round=None):
    """The Plan (hwprune.plan.Plan) of a budget (hwprune.plan.kinds.Budget) on the analysis
    `a` with its `scores`, landed: each try cut and verified as config (a SlimConfig) says,
    and the one kept is the Plan's `landed` Verified cut. Its "plan" section says how it
    landed: each try, and where measured, the measured speedup; "depth" the blocks removed.
    scorer(analysis, removed=None) -> scores (hwprune.importance.scorer.Scorer) scores again
    for block removal and the rescoring rounds; on_round(RescoreRound) is called after each
    rescoring round."""
    site = _site(a, budget, how, progress)
    plan_for, pricing, depth = budget, site.pricing, None
    if how.reference is not None:  # the reference's budget, restated for the model planned
        from .pricing import PricedModel
        pricing = budget.pricing(PricedModel.of(a), site.lm, progress)
        plan_for = budget.restated(budget.figure(site.pricing.full_figure), pricing.full_figure)
    if how.allow_block_removal:
        a, scores, pricing, plan_for, depth = choose_blocks(a, scores, config, plan_for, pricing, site.lm, site.lattice,
                                                            how.min_width, progress, scorer)
    rounds = None
    if getattr(scores, "across_groups", False) and scorer is not None:
        scores, rounds = rescored(a, scores, plan_for, pricing, site.lattice, how.min_width, progress, scorer,
                                  config.objective, on_round, site.lattice_from)
    tries, results, stop = _tries(a, scores, config, budget, plan_for, pricing, site, how, progress)
    pick = pick_try(tries) if tries else 0
    verified, record = results[pick]
    if site.measures and site.lm.table.dirty:
        site.lm.table.save()  # the kernels measured for the landing checks serve the next prediction
    kept = tries[pick] if tries else None
    record = record | {
        "target": site.target.name if site.target else None,
        "lattice": {"multiple": site.lattice.multiple, "from": site.lattice_from},
        "predicted_before": site.pricing.full_figure if site.lm else None,
        "predicted_after": kept["predicted_ms"] if kept else None, "attempts": tries, "tries_ended": stop,
        "landing": None if site.lm is None else "measured here, end to end" if site.measures else "predicted"}
    if rounds:
        record["importance_rounds"] = [r.to_json() for r in rounds]
    if kept and site.measures:
        record["measured"] = {"before_ms": kept["measured_before_ms"], "after_ms": kept["measured_after_ms"],
                              "speedup": round(kept["measured_before_ms"] / kept["measured_after_ms"], 4)}
    # the try kept (an index into attempts) and whether it met its goal; slim warns where it did not
    record["kept_try"] = pick if kept else None
    record["met"] = None if kept is None else kept["landed_ms"] <= kept["goal_ms"] * 1.01
    config_record = {"ratio": None, "budget": {budget.kind: budget.value},
                     "target": site.target.name if site.target else None, "min_width": how.min_width,
                     "allow_block_removal": how.allow_block_removal}
    sections = (("plan", record),) + ((("depth", depth),) if depth is not None else ())
    return Plan(verified.cut.analysis, verified.cut.removed, config_record, sections, landed=verified)


def kept_landing(record: dict) -> dict:
    """The kept try's landing record: limit, cost, landed_ms, goal_ms, ..."""
    return record["attempts"][record["kept_try"]]


def warn_short(record: dict, budget, importance: str) -> None:
    """BudgetWarning: the kept try lands short of its goal (the slim model is kept)."""
    import warnings

    from ..errors import BudgetWarning
    from .kinds import flag_of
    kept = kept_landing(record)
    other = "" if importance == "l2" else (
        f", or plan with another importance (it was {importance!r}; --importance l2 plans from the "
        "weights alone)")
    how = "measured" if record["landing"] == "measured here, end to end" else "predicted"
    warnings.warn(f"{flag_of(budget.kind)} {budget.value:g}: the slim model lands at {kept['landed_ms']:.3f} ms "
                  f"{how}, short of the {kept['goal_ms']:.3f} ms asked ({record['tries_ended']}). It is kept "
                  f"and verified; ask for less{other}", BudgetWarning, stacklevel=4)


def _site(a, budget, how: LandingConfig, progress) -> _Site:
    from ..hardware import get_target
    from ..hardware.latency import latency_model, local_runtime
    from ..hardware.measure import OrtSettings
    from .pricing import PricedModel

    target = how.target
    if target is None and budget.latency:
        target = "cpu"  # a latency budget names no device: this machine's, measured
    tgt = get_target(target) if target is not None else None
    lattice, lattice_from = lattice_for(tgt)
    if how.threads < 1:
        raise InputError(f"threads {how.threads}: give 1 or more")
    if how.reference is not None and not isinstance(how.reference, __import__("torch").nn.Module):
        raise InputError(f"reference {type(how.reference).__name__}: give the nn.Module the budget is stated against")
    if how.reference is not None and not budget.latency:
        raise InputError(f"a reference model was given with {budget.flag()}: a reference is for a latency budget "
                         "(speedup, latency_ms); a size budget is stated against the model cut")
    # a size budget counts the trace: no ONNX export, whatever the model's size
    priced = PricedModel.of(a) if how.reference is None else PricedModel(how.reference, a.example_inputs)
    lm = latency_model(tgt, lut=how.lut, runtime=local_runtime(tgt, OrtSettings(threads=how.threads)),
                       progress=progress) if budget.latency else None
    return _Site(tgt, lattice, lattice_from, priced, lm, budget.pricing(priced, lm, progress))


def _tries(a, scores, config, budget, plan_for, pricing, site: _Site, how: LandingConfig, progress) -> tuple:
    """([each try's landing record], [(Verified cut, plan record) of each try], why the tries
    ended): plan, cut and verify; for a latency budget, check the landing and re-plan on a miss."""
    from .budget import plan_budget
    internal, tries, results, full_ms, planned = None, [], [], None, set()
    stop = f"{how.attempts} tries made"
    for _ in range(how.attempts):
        tick(progress, "plan", len(tries), how.attempts)
        try:
            widths, record = plan_budget(a, scores, plan_for, pricing, site.lattice, min_width=how.min_width,
                                         internal=internal, lattice_from=site.lattice_from,
                                         objective=config.objective)
        except BudgetError:
            if not tries:
                raise
            stop = "a re-plan asked for more than width can give"
            break  # keep the tries made
        key = tuple(sorted(widths.items()))
        if key in planned:
            stop = "a re-plan gave an earlier try's widths: the lattice has no step nearer the goal"
            break
        planned.add(key)
        cuts = plan_widths(a.groups, scores, widths)
        verified = cut_verified(a, a.graph.removed_of(cuts), config, progress)
        results.append((verified, record))
        if site.lm is None:
            stop = "a size budget is exact"
            break
        tried, landed, goal, anchor_ms = _landing(a, verified.cut.model, record, budget, pricing, site, not tries,
                                                  progress, (len(tries), how.attempts))
        full_ms = anchor_ms if anchor_ms is not None else full_ms
        tries.append(tried)
        if goal * (1 - how.slack) <= landed <= goal * 1.01:
            stop = f"landed within 1% above and {how.slack:.0%} below the goal"
            break
        internal = secant(record["planner"]["cost_before"], full_ms, tried["cost"], landed, goal * 0.99)
    return tries, results, stop


def _landing(a, slim_model, record, budget, pricing, site: _Site, first: bool, progress, step: tuple) -> tuple:
    """(the try's record, landed ms, goal ms, the full-width ms the secant is anchored at, or
    None to keep the first try's): measured end to end where the target runs here, else the
    slim model's prediction against the plan's requested figure."""
    from ..export.onnx import onnx_graph
    lm = site.lm
    slim_graph = onnx_graph(slim_model, a.example_inputs)
    landed = lm.predict(lm.blocks(slim_graph)).total_ms
    planner = record["planner"]
    tried = {"limit": planner["limit"], "cost": planner["cost_after"], "predicted_ms": round(landed, 4)}
    goal, anchor_ms = record["requested"], pricing.full_figure
    if site.measures:
        tick(progress, "measure landing", *step)
        # the model planned, where it is not the one the budget is stated against (blocks removed, a reference)
        anchor = [] if site.priced.model is a.model or not first else [onnx_graph(a.model, a.example_inputs)]
        before, after, *rest = lm.runtime.models([site.priced.onnx, slim_graph, *anchor])
        tried |= {"measured_before_ms": round(before.median_ms, 4), "measured_after_ms": round(after.median_ms, 4)}
        landed, goal = after.median_ms, budget.figure(before.median_ms)
        # the model the planner prices, at full width, measured with the first try: the secant's anchor
        anchor_ms = (rest[0].median_ms if rest else before.median_ms) if first else None
    tried["landed_ms"], tried["goal_ms"] = round(landed, 4), round(goal, 4)
    return tried, landed, goal, anchor_ms


def pick_try(tries: list) -> int:
    """The try that meets its goal with the least to spare, else the nearest miss."""
    met = [i for i, t in enumerate(tries) if t["landed_ms"] <= t["goal_ms"] * 1.01]
    if met:
        return max(met, key=lambda i: tries[i]["landed_ms"])
    return min(range(len(tries)), key=lambda i: tries[i]["landed_ms"] / tries[i]["goal_ms"])


def secant(cost_full: float, ms_full: float, cost: float, ms: float, goal_ms: float) -> float:
    """The kernel-cost limit at which the line through (cost_full, ms_full) and (cost, ms)
    reaches goal_ms, kept within 20% of the proportional step cost * goal_ms / ms: two noisy
    measurements close together make a line that points anywhere."""
    step = cost * goal_ms / ms
    if ms_full - ms <= 1e-9 or cost_full - cost <= 1e-9:
        return step
    line = cost + (goal_ms - ms) * (cost_full - cost) / (ms_full - ms)
    return min(max(line, 0.8 * step), 1.2 * step)


def rescored(a, scores, budget, pricing, lattice, min_width, progress, scorer, objective: str = "balanced",
             on_round=None, lattice_from: str = "") -> tuple:
    """Figures measured on the model itself (Fisher) are first-order: cutting most heads of a
    layer costs more than the sum of their figures, since the heads left carry more. So the
    budget is approached in RESCORE_ROUNDS steps (a speedup S as S^(k/R)): plan, mask what
    that plan cuts, and measure the figures again on the masked model; what a round cut
    scores 0 from then on, so later rounds cut it first (scoring it at its zero gate instead,
    so that a later round may restore it, gave lower fidelity in all four Fisher rows of
    benchmarks/bench_vs_torch_pruning.py: MiniLM cosine 0.871 / 0.767 against 0.876 / 0.773,
    Lite0 top-1 0.192 / 0.067 against 0.200 / 0.117). Returns the last figures and each
    round's RescoreRound; on_round(RescoreRound) is called as each round ends; lattice_from: where
    the lattice comes from, for an error that it alone is the limit."""
    from .budget import plan_budget

    rounds = []
    for k in range(1, RESCORE_ROUNDS):
        step = partial_budget(budget, pricing.full_figure, k / RESCORE_ROUNDS)
        tick(progress, "rescore", k - 1, RESCORE_ROUNDS - 1)
        try:
            widths, _ = plan_budget(a, scores, step, pricing, lattice, min_width=min_width, objective=objective)
        except BudgetError:
            # a round's budget is looser than the whole one, which then fails too: it fails as
            # itself (the round's would blame the lattice alone where nothing meets the budget)
            plan_budget(a, scores, budget, pricing, lattice, min_width=min_width, objective=objective,
                        lattice_from=lattice_from)
            raise
        removed = a.graph.removed_of(plan_widths(a.groups, scores, widths))
        fresh = scorer(a, removed)
        for g, s in zip(a.groups, fresh):
            s[removed[g.labels]] = 0.0
        scores = fresh
        rounds.append(RescoreRound(k, step, removed, scores))
        if on_round is not None:
            on_round(rounds[-1])
    tick(progress, "rescore", RESCORE_ROUNDS - 1, RESCORE_ROUNDS - 1)
    return scores, rounds


def partial_budget(budget, full_figure: float, t: float):
    """The budget a fraction t of the way from the full model, geometrically (Budget.partial)."""
    return budget.partial(full_figure, t)
