"""The pass as a list of named stages: trace -> group -> score -> plan -> cut -> verify.

Each stage is a function of the one before; `Analysis` holds trace and groups so that
slim and apply share them instead of tracing twice.
"""
from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import SlimConfig
from .errors import (BudgetError, FrozenGroupError, InputError, LatticeWarning, NothingToPruneError,
                     VerificationError)
from .graph.groups import BOUNDARY_REASONS, ChannelGraph, build_channel_graph
from .graph.heads import head_changes
from .graph.macs import count_macs
from .graph.rules import DECLARED
from .graph.trace import GRAPH, check_inputs, input_tuple, is_exported_graph, short_path, stack_frames, trace
from .importance import DATA_CRITERIA, score
from .importance.fisher import calibration_batches
from .plan import plan_widths
from .surgery import cut, has_cutter
from .verify import tensors_of, verify, verify_fidelity


@dataclass
class Analysis:
    """A traced model and its channel groups: what can be cut, and what is frozen and why."""
    model: nn.Module
    example_inputs: tuple
    graph: ChannelGraph
    custom_rules: tuple = ()  # SlimConfig.custom_rules the groups were built with
    calibration: list | None = None  # the inputs slim measures importance and means on
    compensation: tuple | None = None  # (folds, means) of hwprune.compensate, once slim needs them

    @property
    def trace(self) -> str:
        return self.graph.traced.tracer

    @property
    def groups(self) -> list:
        return self.graph.groups

    @property
    def prunable(self) -> list:
        return [g for g in self.groups if g.frozen is None]

    def to_json(self) -> dict:
        return {"trace": self.trace, "params": _params(self.model),
                "macs": count_macs(self.graph.traced.graph, self.graph.shapes.__getitem__),
                "groups": [_group_json(g, g.width) for g in self.groups],
                "prunable_groups": len(self.prunable), "frozen_groups": len(self.groups) - len(self.prunable),
                "custom_functions": [f[0] for f in self.graph.traced.functions]}

    def fresh(self) -> "Analysis":
        """A copy whose groups can be frozen (as slim does when a cut fails) without touching this one."""
        groups = [dataclasses.replace(g) for g in self.graph.groups]
        return dataclasses.replace(self, graph=dataclasses.replace(self.graph, groups=groups))

    def explain(self) -> str:
        lines = [f"traced with {self.trace}: {len(self.groups)} channel groups, "
                 f"{len(self.prunable)} prunable, {len(self.groups) - len(self.prunable)} frozen"]
        for g in self.groups:
            head = ", ".join(g.members[:3]) + (f" (+{len(g.members) - 3})" if len(g.members) > 3 else "")
            state = "prunable" if g.frozen is None else f"frozen: {g.frozen}"
            lines.append(f"  group {g.id} width {g.width} [{head}] {state}")
        return "\n".join(lines)


def _group_json(g, width_after: int) -> dict:
    return {"id": g.id, "members": list(g.members), "width_before": g.width,
            "width_after": width_after, "frozen": g.frozen}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def analyze(model: nn.Module, example_inputs, *, config: SlimConfig | None = None, progress=None) -> Analysis:
    """Trace the model and find its coupled channel groups; nothing is cut."""
    config = config or SlimConfig()
    example_inputs = input_tuple(example_inputs)
    if not is_exported_graph(model):  # an exported graph keeps the mode it was exported in
        model.eval()
    _tick(progress, "check inputs", 0, 3)
    check_inputs(model, example_inputs)
    _tick(progress, "trace", 1, 3)
    traced = trace(model, example_inputs)
    _tick(progress, "group", 2, 3)
    graph = build_channel_graph(traced, model, _grouping_rules(config), has_cutter=has_cutter)
    _tick(progress, "group", 3, 3)
    return Analysis(model, example_inputs, graph, _grouping_rules(config))


def _grouping_rules(config: SlimConfig) -> tuple:
    """The rules groups are built with: the config's own, and under prune_hidden the norms'."""
    from .graph.rules.norm import hidden_rules
    return tuple(config.custom_rules) + (hidden_rules() if config.prune_hidden else ())


def _tick(progress, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _check_prunable(a: Analysis, config: SlimConfig) -> None:
    frozen = [g for g in a.groups if g.frozen is not None]
    avoidable = [g for g in frozen if g.frozen not in BOUNDARY_REASONS]  # inputs and outputs always are
    if config.strict and avoidable:
        g = avoidable[0]
        raise FrozenGroupError(
            f"--strict: {len(avoidable)} channel group(s) are frozen; the first, {', '.join(g.members[:2])}, "
            f"because {g.frozen}. Run `hwprune analyze --explain` for all of them")
    if not a.prunable:
        why = f" (for example: {frozen[0].frozen})" if frozen else ""
        raise NothingToPruneError(
            f"{type(a.model).__name__} has no prunable channel group: every channel is a model input "
            f"or output or is frozen{why}. Run `hwprune analyze --explain` to see each group")


def slim(model, example_inputs=None, *, ratio: float | None = None, importance: str = "l2",
         strict: bool = False, seed: int = 0, config: SlimConfig | None = None, progress=None,
         widths: dict | None = None, speedup: float | None = None, latency_ms: float | None = None,
         flops: float | None = None, params: float | None = None, target: str | None = None,
         lut: str | None = None, threads: int = 1, min_width: int | None = None, prune_hidden: bool = False,
         allow_block_removal: bool = False, calibration=None, compensate: bool = False,
         objective: str = "balanced", loss_fn=None):
    """Cut `ratio` of every prunable group's channels; returns (slim model, report).

    Budgets instead of a ratio (give exactly one of ratio, speedup, latency_ms, flops, params;
    none means ratio 0.5): widths per group are planned on `target`'s lattice for the most
    retained importance within the budget (hwprune.plan.budget). A latency budget without a
    target is priced on "cpu"; a MAC or parameter budget without one plans on the portable
    lattice (hwprune.hardware.lattice.PORTABLE), the same on every host. `lut` is a latency table,
    `threads` onnxruntime's threads on cpu, `min_width` the narrowest a group may become.
    prune_hidden: also cut the hidden size; norms over it change, so the result is checked by output
    fidelity (report["verify"]["mode"] says so). Analyze with SlimConfig(prune_hidden=True) to match.
    allow_block_removal: with a budget, residual blocks may be removed whole where that
    keeps more importance than cutting width for the same budget (hwprune.plan.depth).
    calibration: inputs for the criteria that measure on inputs (hwprune.importance.DATA_CRITERIA:
    fisher, activation, apoz, taylor, loss_change) and for compensate (a list of input tuples shaped
    like the example inputs; default: the example inputs alone). Other criteria read only the weights.
    objective: what a budgeted plan maximizes over magnitude criteria: "balanced" (default), the sum
    over groups of log(importance kept), so that no group is gutted for being cheap in parameters;
    "params", importance-weighted parameters kept (hwprune.plan.budget.OBJECTIVES).
    loss_fn(model, batch) -> scalar tensor: the loss of importance="taylor" or "loss_change", called
    with a stand-in for the model and a calibration item, which may then carry labels after the
    inputs (default: a label-free loss, hwprune.importance.loss).
    compensate: where a linear or an unpadded conv consumes a removed channel, fold the
    channel's calibration mean into that layer's bias instead of dropping it (hwprune.compensate);
    verified as mask equivalence with those channels read as their means.

    model: an nn.Module with its example_inputs, or the Analysis that `analyze` returned for
    it, without example_inputs (the analysis carries them and the model is not traced again).
    widths: {group id: channels to keep} instead of a ratio (the planners' interface); groups
    not listed keep all their channels. Neither the input model nor the analysis is modified.
    The slim model is verified mask-equivalent before it is returned (VerificationError otherwise)."""
    budget = _budget_of(ratio, speedup, latency_ms, flops, params, widths)
    config = config or SlimConfig(ratio=0.5 if ratio is None else ratio, importance=importance, strict=strict,
                                  seed=seed, prune_hidden=prune_hidden, compensate=compensate,
                                  objective=objective)
    a = _analysis_for(model, example_inputs, config, progress)
    model = a.model
    _check_prunable(a, config)
    _tick(progress, "score", 0, 1)
    if calibration is not None and config.importance not in DATA_CRITERIA and not config.compensate:
        raise InputError(f"calibration inputs were given, but importance {config.importance!r} reads only the "
                         f"weights and compensate is off: use an importance that measures on inputs "
                         f"({', '.join(DATA_CRITERIA)}) or compensate=True, or leave calibration out")
    calib = calibration_batches(a.example_inputs, calibration, labels=loss_fn is not None) \
        if config.importance in DATA_CRITERIA or config.compensate else None

    def scorer(an: Analysis, removed=None):
        an.calibration = calib
        return score(an.graph, tensors_of(an.model), config.importance, config.seed, an.model, calib, progress,
                     removed, _compensation_of(an) if config.compensate else None, loss_fn=loss_fn)
    scores = scorer(a)
    if budget is not None:
        return _slim_budgeted(a, scores, config, budget, target, lut, threads, min_width, progress,
                              allow_block_removal, scorer)
    if allow_block_removal:
        raise InputError("allow_block_removal needs a budget to weigh blocks against width: give speedup, "
                         "latency_ms, flops or params")
    lattice_note = None
    if widths is None:
        widths, lattice_note = _ratio_widths(a, config.ratio, target)
    try:
        cuts = plan_widths(a.groups, scores, widths)
    except ValueError as e:
        raise InputError(f"widths: {e}") from e
    slim_model, report = _cut_verified(a, a.graph.removed_of(cuts), config, progress)
    return slim_model, report if lattice_note is None else report | {"lattice": lattice_note}


def _ratio_widths(a: Analysis, ratio: float, target: str | None) -> tuple:
    """Uniform widths for a ratio: on the target's lattice where one is named; without one,
    as the ratio says, with a warning for each width off the portable lattice (the CPU's AVX2
    fast path and fp16 tensor cores want 8)."""
    import warnings

    from .hardware import get_target
    from .plan.budget import off_lattice, uniform_widths
    lattice, source = _lattice_for(get_target(target) if target is not None else None)
    widths = uniform_widths(a.graph, a.groups, ratio, lattice if target is not None else None)
    off = off_lattice(a.graph, a.groups, widths, lattice)
    if off:
        g = off[0]
        warnings.warn(f"ratio {ratio:g} leaves {len(off)} group(s) off the lattice of % {lattice.multiple}, for "
                      f"example {g.members[0]} at {widths[g.id]} of {g.width} channels: such widths can run slower "
                      "than the original. Give a target (--target) to snap the widths to its lattice",
                      LatticeWarning, stacklevel=3)
    return widths, {"multiple": lattice.multiple, "from": source, "snapped": target is not None,
                    "off_lattice": [g.id for g in off]}


def _budget_of(ratio, speedup, latency_ms, flops, params, widths):
    from .plan.budget import Budget
    given = {k: v for k, v in (("ratio", ratio), ("speedup", speedup), ("latency_ms", latency_ms),
                               ("flops", flops), ("params", params), ("widths", widths)) if v is not None}
    if len(given) > 1:
        raise InputError(f"slim was given {' and '.join(given)}: give exactly one budget (ratio, speedup, "
                         "latency_ms, flops, params) or explicit widths")
    kind = next(iter(given), None)
    return Budget(kind, float(given[kind])) if kind not in (None, "ratio", "widths") else None


def _slim_budgeted(a: Analysis, scores, config: SlimConfig, budget, target: str, lut, threads: int,
                   min_width, progress, allow_block_removal: bool = False, scorer=None, attempts: int = 4):
    """Plan widths for the budget, cut, and for a latency budget check where the slim model
    lands. Where the target runs here the check is a measurement (original and slim end to
    end, interleaved), else the slim model's own prediction. A miss re-plans: the planner's
    limit moves along the line through the original and the last try (kernel cost against
    landed latency), since the part of the run time that no kernel accounts for does not
    shrink with the widths. The try that meets the budget with the least to spare is kept."""
    from .export.onnx import onnx_graph
    from .hardware import get_target
    from .hardware.latency import latency_model, local_runtime
    from .hardware.measure import OrtSettings
    from .plan.budget import latency_pricing, plan_budget, size_pricing

    if target is None and budget.latency:
        target = "cpu"  # a latency budget names no device: this machine's, measured
    tgt = get_target(target) if target is not None else None
    lattice, lattice_from = _lattice_for(tgt)
    if threads < 1:
        raise InputError(f"threads {threads}: give 1 or more")
    graph = onnx_graph(a.model, a.example_inputs)
    lm = None
    if budget.latency:
        lm = latency_model(tgt, lut=lut, runtime=local_runtime(tgt, OrtSettings(threads=threads)), progress=progress)
        pricing = latency_pricing(lm, graph, progress)
    else:
        pricing = size_pricing(graph, budget.kind)
    measures = lm is not None and getattr(lm, "runtime", None) is not None
    original, plan_for, depth, full_figure = a, budget, None, pricing.full_figure
    if allow_block_removal:
        a, scores, pricing, plan_for, depth = _remove_blocks(a, scores, config, budget, pricing, lm, lattice,
                                                             min_width, progress, scorer)
    rounds = None
    if getattr(scores, "across_groups", False) and scorer is not None:
        scores, rounds = _rescored(a, scores, plan_for, pricing, lattice, min_width, progress, scorer,
                                   config.objective)
    internal, tries, results = None, [], []
    for _ in range(attempts):
        _tick(progress, "plan", len(tries), attempts)
        try:
            widths, record = plan_budget(a, scores, plan_for, pricing, lattice, min_width=min_width,
                                         internal=internal, lattice_from=lattice_from, objective=config.objective)
        except BudgetError:
            if not tries:
                raise
            break  # a re-plan asked for more than width can give: keep the tries made
        cuts = plan_widths(a.groups, scores, widths)
        slim_model, report = _cut_verified(a, a.graph.removed_of(cuts), config, progress)
        results.append((slim_model, report, record))
        if lm is None:
            break
        slim_graph = onnx_graph(slim_model, a.example_inputs)
        landed = lm.predict(lm.blocks(slim_graph)).total_ms
        planner = record["planner"]
        tried = {"limit": planner["limit"], "cost": planner["cost_after"], "predicted_ms": round(landed, 4)}
        full, goal = planner["cost_before"], record["requested"]
        if measures:
            _tick(progress, "measure landing", len(tries), attempts)
            anchor = [] if a is original or tries else [onnx_graph(a.model, a.example_inputs)]  # blocks removed
            before, after, *rest = lm.runtime.models([graph, slim_graph, *anchor])
            tried |= {"measured_before_ms": round(before.median_ms, 4), "measured_after_ms": round(after.median_ms, 4)}
            landed, goal = after.median_ms, before.median_ms / budget.value if budget.kind == "speedup" else budget.value
            if not tries:  # the model the planner prices, at full width: the secant's anchor
                full_ms = rest[0].median_ms if rest else before.median_ms
        else:
            full_ms = pricing.full_figure
        tried["landed_ms"], tried["goal_ms"] = round(landed, 4), round(goal, 4)
        tries.append(tried)
        if goal * 0.9 <= landed <= goal * 1.01:  # within 1% above and 10% below: done
            break
        internal = _secant(full, full_ms, tried["cost"], landed, goal * 0.99)
    pick = _pick_try(tries) if tries else 0
    slim_model, report, record = results[pick]
    if lm is not None and getattr(lm, "runtime", None) is not None and lm.table.dirty:
        lm.table.save()  # the kernels measured for the landing checks serve the next prediction
    kept = tries[pick] if tries else None
    record |= {"target": tgt.name if tgt else None, "lattice": {"multiple": lattice.multiple, "from": lattice_from},
               "predicted_before": full_figure if lm else None,
               "predicted_after": kept["predicted_ms"] if kept else None, "attempts": tries,
               "landing": None if lm is None else "measured here, end to end" if measures else "predicted"}
    if rounds:
        record["importance_rounds"] = rounds
    if kept and measures:
        record["measured"] = {"before_ms": kept["measured_before_ms"], "after_ms": kept["measured_after_ms"],
                              "speedup": round(kept["measured_before_ms"] / kept["measured_after_ms"], 4)}
    report["plan"] = record
    report["config"] = report["config"] | {"ratio": None, "budget": {budget.kind: budget.value},
                                           "target": tgt.name if tgt else None, "min_width": min_width,
                                           "allow_block_removal": allow_block_removal}
    if depth is not None:
        report["depth"] = depth
        report["params"]["before"] = _params(original.model)
        report["macs"]["before"] = count_macs(original.graph.traced.graph, original.graph.shapes.__getitem__)
    return slim_model, report


def _lattice_for(tgt) -> tuple:
    """(lattice, where it comes from): the target's, or without one the portable lattice."""
    from .hardware.lattice import PORTABLE
    if tgt is None:
        return PORTABLE, "portable (no target given)"
    if any(r.requires for r in tgt.rules):
        isa = sorted(r.requires for r in tgt.lattice.rules if r.requires)
        return tgt.lattice, f"target {tgt.name} on this host ({', '.join(isa) or 'no vector ISA flag'})"
    return tgt.lattice, f"target {tgt.name}"


RESCORE_ROUNDS = 3


def _rescored(a: Analysis, scores, budget, pricing, lattice, min_width, progress, scorer, objective):
    """Figures measured on the model itself (Fisher) are first-order: cutting most heads of a
    layer costs more than the sum of their figures, since the heads left carry more. So the
    budget is approached in RESCORE_ROUNDS steps (a speedup S as S^(k/R)): plan, mask what
    that plan cuts, and measure the figures again on the masked model; what a round cut
    scores 0 from then on, so later rounds cut it first (scoring it at its zero gate instead,
    so that a later round may restore it, gave lower fidelity in all four Fisher rows of
    benchmarks/bench_vs_torch_pruning.py: MiniLM cosine 0.871 / 0.767 against 0.876 / 0.773,
    Lite0 top-1 0.192 / 0.067 against 0.200 / 0.117). Returns the last figures and, per
    round, the budget planned for and the channels it cut."""
    from .plan.budget import plan_budget

    rounds = []
    for k in range(1, RESCORE_ROUNDS):
        step = _partial_budget(budget, pricing.full_figure, k / RESCORE_ROUNDS)
        _tick(progress, "rescore", k - 1, RESCORE_ROUNDS - 1)
        widths, _ = plan_budget(a, scores, step, pricing, lattice, min_width=min_width, objective=objective)
        removed = a.graph.removed_of(plan_widths(a.groups, scores, widths))
        fresh = scorer(a, removed)
        for g, s in zip(a.groups, fresh):
            s[removed[g.labels]] = 0.0
        scores = fresh
        rounds.append({"budget": {step.kind: round(step.value, 4)}, "channels_cut": int(removed.sum())})
    _tick(progress, "rescore", RESCORE_ROUNDS - 1, RESCORE_ROUNDS - 1)
    return scores, rounds


def _partial_budget(budget, full_figure: float, t: float):
    """The budget a fraction t of the way from the full model, geometrically."""
    from .plan.budget import Budget
    if budget.kind == "latency_ms":
        return Budget("latency_ms", full_figure * (budget.value / full_figure) ** t)
    return Budget(budget.kind, budget.value ** t)


def _remove_blocks(a: Analysis, scores, config: SlimConfig, budget, pricing, lm, lattice, min_width, progress,
                   scorer):
    """Width-only plan against plans with the k cheapest residual blocks removed (k = 1, 2, 4,
    ...; cheapest: least importance kept inside per unit of cost): the removal is kept where
    the plan for the same budget then retains more importance. Returns the analysis, scores,
    pricing and budget to plan with (the budget as an absolute figure of the original: a
    speedup is of the original, not of the model without the blocks) and the report's record."""
    from .export.onnx import onnx_graph
    from .plan.budget import Budget, latency_pricing, plan_budget, size_pricing
    from .plan.costs import build_cost_model
    from .plan.depth import block_ranking, remove_blocks, residual_blocks, verify_removal

    _tick(progress, "blocks", 0, 1)
    blocks = residual_blocks(a)
    record = {"candidates": [b.path for b in blocks], "tries": [], "removed": [], "verify": None}
    figure = pricing.full_figure / budget.value if budget.kind == "speedup" else \
        budget.value if budget.kind == "latency_ms" else budget.value * pricing.full_figure
    cost = build_cost_model(a, pricing.blocks, pricing.kernel_cost, pricing.unit, pricing.full_cost)
    try:
        widths, base = plan_budget(a, scores, budget, pricing, lattice, min_width=min_width,
                                   objective=config.objective)
        best_value, unmet = base["planner"]["retained_importance"], None
    except BudgetError as e:  # width alone cannot meet it: rank the blocks at full width
        widths, best_value, unmet = dict(cost.full), -np.inf, e
    ranked = [b for _, b, _ in block_ranking(a, blocks, cost, widths, scores)]
    record["tries"].append({"removed": 0, "retained_importance": best_value if unmet is None else None})
    best = (a, scores, pricing, budget, [])
    k = 1
    while k <= len(ranked):
        chosen = ranked[:k]
        _tick(progress, "blocks", k, len(ranked))
        model_k = remove_blocks(a.model, chosen)
        a_k = analyze(model_k, a.example_inputs, config=config)
        scores_k = scorer(a_k)
        graph_k = onnx_graph(model_k, a.example_inputs)
        pricing_k = latency_pricing(lm, graph_k, progress) if budget.latency else size_pricing(graph_k, budget.kind)
        budget_k = Budget("latency_ms", figure) if budget.latency else \
            Budget(budget.kind, min(1.0, figure / pricing_k.full_figure))
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
        best_value, best = value, (a_k, scores_k, pricing_k, budget_k, chosen)
        k *= 2
    if unmet is not None and not best[4]:
        raise unmet
    a_best, scores_best, pricing_best, budget_best, chosen = best
    if chosen:
        record["verify"] = verify_removal(a, a_best.model, chosen, config.rtol, config.verify_batches)
        record["removed"] = [b.to_json() for b in chosen]
    return a_best, scores_best, pricing_best, budget_best, record


def _pick_try(tries: list) -> int:
    """The try that meets its goal with the least to spare, else the nearest miss."""
    met = [i for i, t in enumerate(tries) if t["landed_ms"] <= t["goal_ms"] * 1.01]
    if met:
        return max(met, key=lambda i: tries[i]["landed_ms"])
    return min(range(len(tries)), key=lambda i: tries[i]["landed_ms"] / tries[i]["goal_ms"])


def _secant(cost_full: float, ms_full: float, cost: float, ms: float, goal_ms: float) -> float:
    """The kernel-cost limit at which the line through (cost_full, ms_full) and (cost, ms)
    reaches goal_ms, kept within 20% of the proportional step cost * goal_ms / ms: two noisy
    measurements close together make a line that points anywhere."""
    step = cost * goal_ms / ms
    if ms_full - ms <= 1e-9 or cost_full - cost <= 1e-9:
        return step
    line = cost + (goal_ms - ms) * (cost_full - cost) / (ms_full - ms)
    return min(max(line, 0.8 * step), 1.2 * step)


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
    if _grouping_rules(config) != model.custom_rules:
        raise InputError("slim was given an Analysis made with other custom rules or prune_hidden than its "
                         "config's: analyze again with the same SlimConfig.custom_rules and prune_hidden")
    if not is_exported_graph(model.model):  # as analyze does
        model.model.eval()
    return model.fresh()


def _cut_verified(a: Analysis, removed: np.ndarray, config: SlimConfig, progress, attempts: int = 8):
    """Cut and verify. Where a size written into forward does not follow a cut, freeze the
    groups involved and cut again: by the line that raised, or, when the output is silently
    wrong, by bisecting the cut groups for one whose cut alone breaks equivalence."""
    for _ in range(attempts):
        try:
            return _cut_and_verify(a, removed, config, progress)
        except VerificationError as e:
            if config.strict:
                raise
            blamed = _groups_at(a.graph, e.__cause__, removed) or _bisect(a, removed, config)
            if not blamed:
                raise
            for g, where in blamed:
                g.frozen = f"a size in forward at {where} does not follow a cut of this group ({_first_line(e)})"
                removed[g.labels] = False
    raise VerificationError(f"the slim model still fails after freezing groups {attempts} times")


def _first_line(e: BaseException) -> str:
    cause = e.__cause__ or e
    return str(cause).splitlines()[0][:160]


def _bisect(a: Analysis, removed: np.ndarray, config: SlimConfig) -> list:
    """[(group, 'unknown line')] for one cut group that alone breaks equivalence, or []."""
    def fails(groups) -> bool:
        trial = np.zeros_like(removed)
        for g in groups:
            trial[g.labels] = removed[g.labels]
        try:
            _cut_and_verify(a, trial, config, None)
            return False
        except VerificationError:
            return True
    suspects = [g for g in a.groups if g.frozen is None and removed[g.labels].any()]
    while len(suspects) > 1:
        half = suspects[: len(suspects) // 2]
        suspects = half if fails(half) else suspects[len(suspects) // 2:]
    if suspects and fails(suspects):
        return [(suspects[0], "an unknown line (found by bisection: the output changed)")]
    return []


def _groups_at(graph: ChannelGraph, error, removed: np.ndarray) -> list:
    """(group, 'file:line') for the cut groups whose tensors pass through the line that raised."""
    if error is None:
        return []
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in f.filename or "/torch/nn/modules/" in f.filename]
    for filename, lineno in reversed(frames):
        nodes = [n for n in graph.traced.graph.nodes if n.op == "call_function"
                 and any(f == filename and int(ln) == lineno for f, ln, _ in stack_frames(n))]
        labels = set()
        for n in nodes:
            for t in [a.name for a in n.all_input_nodes] + [n.name]:
                for d in range(len(graph.shapes.get(t, ()))):
                    seg = graph.dim_labels(t, d)
                    labels.update(seg[removed[seg]].tolist())
        hit = [g for g in graph.groups if g.frozen is None and labels.intersection(g.labels.tolist())]
        if hit:
            return [(g, f"{short_path(filename)}:{lineno}") for g in hit]
    return []


def _module_calls(graph: ChannelGraph, removed: np.ndarray) -> dict:
    """{module path: (old, new) shape of the first tensor input of its first call}."""
    calls = {}
    owner = {n: fqn.rpartition(".")[0] for n, (k, fqn) in graph.traced.placeholders.items() if k in ("param", "buffer")}
    for node in graph.traced.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function":
            continue
        # the innermost module on the stack; without one (fallback tracer), the module whose own tensor it reads
        path = list(stack.values())[-1][0] if stack else next(
            (owner[a.name] for a in node.all_input_nodes if a.name in owner), None)
        if path is None:
            continue
        first = next((a for a in node.args if isinstance(a, torch.fx.Node) and a.name in graph.shapes), None)
        if path not in calls and first is not None:
            calls[path] = (graph.shapes[first.name], graph.new_shape(first.name, removed))
    return calls


def _compensation_of(a: Analysis) -> tuple:
    """(folds, means) of hwprune.compensate for the analysis, measured once: where removed
    channels can be read as their means, and the means on its calibration inputs."""
    if a.compensation is None:
        from .compensate import channel_means, find_folds
        folds = find_folds(a.graph, a.model)
        a.compensation = (folds, channel_means(a.graph, a.model, a.calibration or [a.example_inputs], folds))
    return a.compensation


def _cut_and_verify(a: Analysis, removed: np.ndarray, config: SlimConfig, progress):
    graph = a.graph
    _tick(progress, "cut", 0, 1)
    kept = graph.param_kept(removed)
    shapes = (graph.shapes.__getitem__, lambda t: graph.new_shape(t, removed)) if a.trace == GRAPH else None
    heads = head_changes(graph, removed) if shapes is None else None
    slim_model = cut(a.model, kept, _module_calls(graph, removed), shapes, heads)
    if shapes is None:
        slim_model.eval()
    fills, folded = {}, 0
    if config.compensate:
        from .compensate import bias_deltas, fills_for, fold_biases
        folds, means = _compensation_of(a)
        fills = fills_for(graph, folds, means, removed)
        folded = fold_biases(slim_model, bias_deltas(folds, fills, tensors_of(a.model)), kept)
    _tick(progress, "verify", 0, 1)
    if config.prune_hidden:  # norms over cut channels: not mask-equivalent by design
        result = verify_fidelity(a.model, slim_model, a.example_inputs, config.verify_batches)
    else:
        result = verify(graph, a.model, slim_model, a.example_inputs, removed, config.rtol, config.verify_batches,
                        fills)
    shapes_after = lambda t: graph.new_shape(t, removed)  # noqa: E731
    width_after = {g.id: int((~removed[g.labels]).sum()) for g in graph.groups}
    report = {
        "hwprune_version": _version(),
        "trace": a.trace,
        "trace_note": a.graph.traced.note,
        "config": {"ratio": config.ratio, "importance": config.importance, "strict": config.strict,
                   "seed": config.seed, "prune_hidden": config.prune_hidden, "compensate": config.compensate,
                   "objective": config.objective},
        "params": {"before": _params(a.model), "after": _params(slim_model)},
        "macs": {"before": count_macs(graph.traced.graph, graph.shapes.__getitem__),
                 "after": count_macs(graph.traced.graph, shapes_after)},
        "verify": result,
        "compensated": {"layers": folded, "reads": int(sum(int((f != 0).sum()) for _, f in fills.values()))},
        "groups": [_group_json(g, width_after[g.id]) for g in graph.groups],
        "kept": {k: {str(d): v.tolist() for d, v in dims.items()} for k, dims in kept.items()},
        "declared_rules": sorted(f"{getattr(k, '__name__', k)}={fn.__name__}" for k, fn in DECLARED.items()),
    }
    return slim_model, report


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("hwprune")
    except PackageNotFoundError:
        return "0+local"


def apply(report: dict, model: nn.Module, example_inputs, *, progress=None, calibration=None) -> nn.Module:
    """Cut another checkpoint of the same architecture exactly as `report["kept"]` says. Where
    the report's run compensated, this checkpoint's means are measured on `calibration`
    (default: the example inputs), as slim's calibration argument."""
    blocks = (report.get("depth") or {}).get("removed") or []
    if blocks:  # the residual blocks slim removed go first: "kept" indexes the model without them
        from .plan.depth import ResidualBlock, remove_blocks
        model = remove_blocks(model, [ResidualBlock.from_json(b) for b in blocks])
    a = analyze(model, example_inputs, progress=progress)
    removed = _removed_from_kept(a.graph, report.get("kept") or {})
    config = SlimConfig(ratio=float(report.get("config", {}).get("ratio") or 0.0), strict=True,
                        compensate=bool(report.get("config", {}).get("compensate")))
    if calibration is not None:
        a.calibration = calibration_batches(a.example_inputs, calibration)
    slim_model, _ = _cut_verified(a, removed, config, progress)
    return slim_model


def _removed_from_kept(graph: ChannelGraph, kept: dict) -> np.ndarray:
    removed = np.zeros(int(graph.labels.max()) + 1, dtype=bool)
    slots = {(fqn, d): (tid, d) for tid, d, fqn in graph.param_slots}
    for fqn, dims in kept.items():
        for d, idx in dims.items():
            if (fqn, int(d)) not in slots:
                raise InputError(f"the report cuts {fqn} dim {d}, which this model does not have: "
                                 "apply a report only to the architecture it was made for")
            tid, d = slots[(fqn, int(d))]
            lab = graph.dim_labels(tid, d)
            drop = np.setdiff1d(np.arange(len(lab)), np.asarray(idx, dtype=int))
            removed[lab[drop]] = True
    got = {k: {str(d): v.tolist() for d, v in dims.items()} for k, dims in graph.param_kept(removed).items()}
    if got != {k: {str(d): list(v) for d, v in dims.items()} for k, dims in kept.items()}:
        raise InputError("the report's kept channels are not a valid cut of this model's channel groups: "
                         "was it made for another architecture or input shape?")
    return removed
