"""The pass as a list of named stages over frozen records:

    load -> trace -> group   hwprune.analysis.analyze             -> Analysis
    score                    hwprune.importance.scorer.Scorer     -> Scores
    plan                     hwprune.plan.stage.plan_cut          -> Plan  (a budget: landed, hwprune.plan.land)
    cut                      hwprune.surgery.stage.cut_model      -> Cut
    verify                   hwprune.verify.verify_cut            -> Verified  (with the repair: verify.repair)
    report                   hwprune.report.slim_report           -> Report

`slim` checks its arguments and calls `run_stages`, which calls the stages in this order.
"""
from __future__ import annotations

import dataclasses
import inspect
import warnings

from torch import nn

from .analysis import Analysis, analyze, check_prunable, grouping_rules
from .config import SlimConfig
from .errors import InputError
from .graph.trace import is_exported_graph
from .importance import Scores
from .importance.auto import resolve as resolve_importance
from .importance.fisher import calibration_batches
from .importance.scorer import check_calibration, scorer_for
from .memory import choose_in_place
from .plan import Plan, removed_from_kept
from .plan.kinds import budget_of
from .plan.land import LandingConfig, kept_landing, warn_short
from .plan.stage import plan_cut
from .progress import tick
from .report import Report, slim_report
from .report.build import count_params
from .surgery.stage import Cut
from .verify import Verified
from .verify.repair import cut_verified

__all__ = ["Analysis", "analyze", "slim", "apply", "run_stages", "Scores", "Plan", "Cut", "Verified", "Report"]


def slim(model, example_inputs=None, *, ratio: float | None = None, importance: str = "auto",
         strict: bool = False, seed: int = 0, config: SlimConfig | None = None, progress=None,
         widths: dict | None = None, speedup: float | None = None, latency_ms: float | None = None,
         flops: float | None = None, params: float | None = None, target: str | None = None,
         lut: str | None = None, threads: int = 1, min_width: int | None = None, prune_hidden: bool = False,
         allow_block_removal: bool = False, calibration=None, compensate: bool = False,
         objective: str = "balanced", loss_fn=None, budget=None, in_place: bool | None = None,
         landing_slack: float = 0.10, reference=None):
    """Cut `ratio` of every prunable group's channels; returns (slim model, report).

    Budgets instead of a ratio (give exactly one of ratio, speedup, latency_ms, flops, params, or
    budget, a hwprune.plan.kinds.Budget of any registered kind; none means ratio 0.5): widths per
    group are planned on `target`'s lattice for the most
    retained importance within the budget (hwprune.plan.budget). A latency budget without a
    target is priced on "cpu"; a MAC or parameter budget without one plans on the portable
    lattice (hwprune.hardware.lattice.PORTABLE), the same on every host. `lut` is a latency table,
    `threads` onnxruntime's threads on cpu, `min_width` the narrowest a group may become.
    landing_slack: a latency budget is cut, measured (or predicted) and planned again until it lands
    between 1% slower than asked and this fraction faster (default 0.10), in at most 4 tries; a
    smaller slack lands nearer the request, at the cost of more tries.
    reference: an nn.Module taking the same example inputs that a latency budget is stated
    against instead of `model`: a speedup divides its latency, and a landing measured here times it
    in the same run as the slim model, so report["plan"]["measured"] compares the two
    (hwprune.iterative_slim's later rounds give the original).
    prune_hidden: also cut the hidden size; norms over it change, so the result is checked by output
    fidelity (report["verify"]["mode"] says so). Analyze with SlimConfig(prune_hidden=True) to match.
    allow_block_removal: with a budget, residual blocks may be removed whole where that
    keeps more importance than cutting width for the same budget (hwprune.plan.depth).
    importance: how channels are ranked (hwprune.importance.CRITERIA). "auto" (default) chooses
    from what the run does (hwprune.importance.auto): with a budget, fisher measured on the
    calibration inputs (default: the example inputs), whose figures compare a head with a neuron
    or a stem filter with a late one; taylor where a loss_fn is given; l2 for a ratio or widths,
    and past 1B parameters. report["config"]["importance_auto"] says which and why.
    calibration: inputs for the criteria that measure on inputs (hwprune.importance.data_criteria():
    fisher, activation, apoz, taylor, loss_change) and for compensate (a list of input tuples shaped
    like the example inputs; default: the example inputs alone). Other criteria read only the weights.
    objective: what a budgeted plan maximizes over magnitude criteria: "balanced" (default), the sum
    over groups of log(importance kept), so that no group is gutted for being cheap in parameters;
    "params", importance-weighted parameters kept; "share", each group's log(importance kept)
    weighed by its share of the model's cost, a uniform cut where importance is flat
    (hwprune.plan.budget.OBJECTIVES).
    loss_fn(model, batch) -> scalar tensor: the loss of importance="taylor" or "loss_change", called
    with a stand-in for the model and a calibration item, which may then carry labels after the
    inputs (default: a label-free loss, hwprune.importance.loss).
    in_place: True cuts `model` itself, a tensor at a time (the peak is the model and one tensor more,
    not two models), verified against reference outputs taken before the cut, and without the repair
    that freezes a failing group and cuts again; None (default) does so only where a copy of the
    weights would take more than half of the available memory, with a warning (hwprune.memory);
    False always cuts a copy. report["memory"] says which was done and why.
    compensate: where a linear or an unpadded conv consumes a removed channel, fold the
    channel's calibration mean into that layer's bias instead of dropping it (hwprune.compensate);
    verified as mask equivalence with those channels read as their means.

    model: an nn.Module with its example_inputs, or the Analysis that `analyze` returned for
    it, without example_inputs (the analysis carries them and the model is not traced again).
    widths: {group id: channels to keep} instead of a ratio (the planners' interface); groups
    not listed keep all their channels. Neither the input model nor the analysis is modified.
    The slim model is verified mask-equivalent before it is returned (VerificationError otherwise).
    config: a SlimConfig instead of the keywords it holds (ratio, importance, strict, seed,
    prune_hidden, compensate, objective, in_place); given with any of them, InputError."""
    budget = budget_of({"ratio": ratio, "speedup": speedup, "latency_ms": latency_ms, "flops": flops,
                        "params": params, "budget": budget, "widths": widths}, allow_block_removal)
    config = _config_of(config, ratio=ratio, importance=importance, strict=strict, seed=seed,
                        prune_hidden=prune_hidden, compensate=compensate, objective=objective,
                        in_place=in_place)
    how = LandingConfig(target=target, lut=lut, threads=threads, min_width=min_width,
                        allow_block_removal=allow_block_removal, slack=landing_slack, reference=reference)
    analysis = _analysis_for(model, example_inputs, config, progress)  # load -> trace -> group
    memory = _memory_choice(config, analysis.model, _needs_original(budget, allow_block_removal))
    config = dataclasses.replace(config, in_place=memory.in_place)
    *_, verified, report = run_stages(analysis, config, budget=budget, widths=widths, how=how,
                                      calibration=calibration, loss_fn=loss_fn, progress=progress)
    return verified.cut.model, report.with_section("memory", memory.to_json()).to_json()


def _needs_original(budget, allow_block_removal: bool) -> str | None:
    """Why the run must keep the original whole after its first cut, or None: a latency budget's
    landing cuts it again on a miss and measures it; block removal cuts copies of it."""
    if budget is not None and budget.latency:
        return f"the {budget.kind} budget's landing measures the original and may cut it again"
    if allow_block_removal:
        return "allow_block_removal cuts copies of the original with blocks removed"
    return None


def _memory_choice(config: SlimConfig, model, needs_original: str | None):
    """In place or a copy (hwprune.memory); said with a warning where chosen for the user."""
    if needs_original is not None:
        if config.in_place:
            raise InputError(f"in_place=True cannot be kept: {needs_original}. Give a ratio, widths or a size "
                             "budget (params, flops) to cut in place, or leave in_place out")
        return dataclasses.replace(choose_in_place(False, model), why=f"a copy: {needs_original}")
    choice = choose_in_place(config.in_place, model)
    if config.in_place is None and choice.in_place:
        warnings.warn(f"slim cuts the model it was given in place: {choice.why}. Pass in_place=False "
                      "(--in-place off) to keep it, where memory allows", ResourceWarning, stacklevel=3)
    return choice


def run_stages(analysis: Analysis, config: SlimConfig, *, budget=None, widths: dict | None = None,
               how: LandingConfig | None = None, calibration=None, loss_fn=None, progress=None,
               on_round=None) -> tuple[Scores, Plan, Cut, Verified, Report]:
    """The stages after trace and group, on an analysis whose groups they may freeze (slim
    gives a fresh() copy): each takes the records before it and returns its own. budget: a
    hwprune.plan.kinds.Budget, else `widths`, else config.ratio; how: where and how a budget
    lands (hwprune.plan.land.LandingConfig; a ratio reads its target); on_round: see
    hwprune.plan.land.land."""
    check_prunable(analysis, config)
    tick(progress, "score", 0, 1)
    importance, why = resolve_importance(config.importance, planned=budget is not None, loss_given=loss_fn is not None,
                                         params=count_params(analysis.model),
                                         calibration_given=calibration is not None, objective=config.objective)
    if calibration is not None:  # asked here, so that the error says what auto chose and why
        check_calibration(importance, config.compensate, why)
    given = analysis

    def score_and_plan(importance: str, calibration):
        cfg = dataclasses.replace(config, importance=importance)
        scorer = scorer_for(given, cfg, calibration, loss_fn, progress)
        bound = scorer.bind(given)  # the inputs the criteria and the compensation measure on
        scores = scorer(bound)  # score
        plan = plan_cut(bound, scores, cfg, budget=budget, widths=widths, how=how, scorer=scorer,
                        progress=progress, on_round=on_round)  # plan
        return cfg, bound, scores, plan

    config, analysis, scores, plan = score_and_plan(importance, calibration)
    if why is not None and importance != "l2" and _landed(plan) is False:
        # auto's measured criterion landed short of the budget: the weights' plan, where it lands nearer
        short = _landed_line(plan)
        l2 = score_and_plan("l2", calibration if config.compensate else None)
        if _nearer(l2[3], plan):
            config, analysis, scores, plan = l2
            why = (f"l2: auto's {importance} plan landed short ({short}) and the weights' plan "
                   f"{'met the budget' if _landed(plan) else 'landed nearer'} ({_landed_line(plan)})")
        else:
            why += f"; it landed short ({short}), and the weights' plan no nearer ({_landed_line(l2[3])})"
    if _landed(plan) is False:
        warn_short(dict(plan.sections)["plan"], budget, config.importance)
    # cut -> verify; a budget's landing has cut and verified its plan already, to see where it lands
    verified = plan.landed if plan.landed is not None else cut_verified(plan.analysis, plan.removed, config,
                                                                         progress)
    report = slim_report(analysis, plan, verified, config, importance_why=why)  # report
    return scores, plan, verified.cut, verified, report


def _landed(plan) -> bool | None:
    """Whether a budget's kept plan met its goal (None: nothing landed, as for a ratio)."""
    return (dict(plan.sections).get("plan") or {}).get("met")


def _landing_of(plan) -> dict:
    return kept_landing(dict(plan.sections)["plan"])


def _landed_line(plan) -> str:
    t = _landing_of(plan)
    return f"{t['landed_ms']:.3f} ms for {t['goal_ms']:.3f} asked"


def _nearer(plan, than) -> bool:
    """Whether plan lands nearer its goal than `than`: met where it was not, or short by less."""
    a, b = _landing_of(plan), _landing_of(than)
    return a["landed_ms"] / a["goal_ms"] < b["landed_ms"] / b["goal_ms"]


def _config_of(config: SlimConfig | None, **given) -> SlimConfig:
    """The run's SlimConfig: `config`, or one made of slim's keywords. Keywords changed from
    their defaults next to a config would be ignored, so they are refused."""
    if config is None:
        ratio = given.pop("ratio")
        return SlimConfig(ratio=0.5 if ratio is None else ratio, **given)
    defaults = inspect.signature(slim).parameters
    changed = [k for k, v in given.items() if v != defaults[k].default]
    if changed:
        names = ", ".join(f"{k}={given[k]!r}" for k in changed)
        raise InputError(f"slim was given config= and {names}: the config holds these, so the keywords would be "
                         f"ignored. Set them in the config (dataclasses.replace(config, {changed[0]}=...)), "
                         "or leave config out")
    return config




def _analysis_for(model, example_inputs, config: SlimConfig, progress) -> Analysis:
    """The model's analysis: traced now, or the one given (copied, since slim may freeze groups)."""
    if not isinstance(model, Analysis):
        if example_inputs is None:
            raise InputError(f"slim was given a {type(model).__name__} without example inputs: "
                             "give the inputs to trace it with, or the Analysis from hwprune.analyze")
        return analyze(model, example_inputs, config=config, progress=progress)
    if example_inputs is not None:
        raise InputError("slim was given an Analysis and example inputs: the analysis carries the inputs "
                         "it was traced with; give the Analysis alone, or the model with its inputs")
    if grouping_rules(config) != model.custom_rules:
        raise InputError("slim was given an Analysis made with other custom rules or prune_hidden than its "
                         "config's: analyze again with the same SlimConfig.custom_rules and prune_hidden")
    if not is_exported_graph(model.model):  # as analyze does
        model.model.eval()
    return model.fresh()


def apply(report: dict, model: nn.Module, example_inputs, *, progress=None, calibration=None) -> nn.Module:
    """Cut another checkpoint of the same architecture exactly as `report["kept"]` says. Where
    the report's run compensated, this checkpoint's means are measured on `calibration`
    (default: the example inputs), as slim's calibration argument."""
    blocks = (report.get("depth") or {}).get("removed") or []
    if blocks:  # the residual blocks slim removed go first: "kept" indexes the model without them
        from .plan.depth import ResidualBlock, remove_blocks
        model = remove_blocks(model, [ResidualBlock.from_json(b) for b in blocks])
    a = analyze(model, example_inputs, progress=progress)
    removed = removed_from_kept(a.graph, report.get("kept") or {})
    config = SlimConfig(ratio=float(report.get("config", {}).get("ratio") or 0.0), strict=True,
                        compensate=bool(report.get("config", {}).get("compensate")))
    if calibration is not None:
        a = a.with_calibration(calibration_batches(a.example_inputs, calibration))
    return cut_verified(a, removed, config, progress).cut.model
