"""Iterative pruning (HALP's schedule): K cuts toward the budget, each followed by recovery.

Round k of K plans for the budget a fraction k/K of the way from the original, geometrically,
always stated against the ORIGINAL model (so rounding in one round does not compound):
    speedup S       a speedup of S^(k/K) over the original, given to slim as reference: where
                    the target is this machine, every round's landing measures the original
                    beside its cut, so each goal and the final measured speedup are ratios
                    within one run, whatever the machine's speed did between rounds
    latency_ms L    at most F * (L / F)^(k/K) ms, F the original's predicted latency (the last
                    round: L itself); later rounds measure the original beside their cut too
    flops / params  at most f^(k/K) of the original's MACs / parameters, given to slim as a
                    fraction of the current model's
    ratio r         each round removes 1 - (1 - r)^(1/K) of every group's current channels
Any budget kind follows its row in hwprune.plan.kinds: a latency kind as speedup (stated
against the original: round 1 in its own terms) or latency_ms (an absolute figure), any
other as flops.
Each round calls hwprune.slim on the current, fine-tuned model, so importance is measured
again on the recovered weights, and slim verifies the cut as always; then the cut model is
fine-tuned by distillation from the original. What the rounds kept composes into one map of
the original's channels, so the final report's "kept" applies to the original (hwprune.apply).
"""
from __future__ import annotations

from ..errors import InputError
from ..plan.kinds import BUDGET_KINDS, Budget, budget_keywords, budget_of
from .config import RecoverConfig
from .distributed import from_main, pick_device, process_group
from .train import finetune


def iterative_slim(model, example_inputs, data, *, rounds: int = 3, recover: RecoverConfig | None = None,
                   tokenizer=None, progress=None, checkpoint_dir=None, resume: bool = False, penalty=None,
                   **slim_kwargs):
    """(final model, report): `rounds` rounds of hwprune.slim then hwprune.finetune from the
    original `model` (the teacher of every round). slim_kwargs are hwprune.slim's (one
    budget, target, importance, ...). The report is the last round's slim report, with
    "kept", "params" and "macs" before and "groups" widths stated against the original, and
    report["recover"]["rounds"]: each round's budget, slim summary and recovery record.
    checkpoint_dir: each round's recovery checkpoints go to DIR/round-K; with resume=True
    and a budget that plans the same each time (flops, params, ratio or a predicted latency),
    rounds whose recovery finished are redone from their last checkpoint in no time.
    Under torchrun, rank 0 cuts each round and sends the cut model to the other processes."""
    from ..api import slim

    if not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds {rounds!r}: give 1 or more rounds of cut and recovery")
    if "widths" in slim_kwargs:
        raise InputError("iterative slim plans each round from a budget: give speedup, latency_ms, flops, params "
                         "or ratio instead of widths")
    if slim_kwargs.get("allow_block_removal") and rounds > 1:
        raise InputError("allow_block_removal with more than one round is not supported: a removed block changes "
                         "the names later rounds' channels are stated in; use rounds=1, or cut width only")
    recover = recover or RecoverConfig()
    kind, value = _budget(slim_kwargs)
    rest = {k: v for k, v in slim_kwargs.items() if k not in budget_keywords()}
    example_inputs = (example_inputs,) if not isinstance(example_inputs, (tuple, list)) else tuple(example_inputs)
    row = BUDGET_KINDS.get(kind)
    with process_group(pick_device(recover.device)) as world:
        absolute = row is not None and row.latency and not row.relative  # its steps need the original's figure
        original_figure = _figure(model, example_inputs, kind, rest) if absolute else None
        current_model, kept, rows, report = model, None, [], None
        for k in range(1, rounds + 1):
            step = _round_budget(kind, value, k, rounds, model, current_model, example_inputs, rest,
                                 original_figure, rows)
            # a latency budget is stated against the original, timed in the round's own run
            reference = model if k > 1 and row is not None and row.latency else None
            # in_place=False: the original is the teacher of every round's recovery
            cut, report = from_main(slim(current_model, example_inputs, **_keyword(step), **rest, progress=progress,
                                         in_place=False, reference=reference)
                                    if world.main else None, world)
            kept = compose_kept(kept, report["kept"])
            current_model, record = finetune(
                cut, model, data, config=recover, example_inputs=example_inputs,
                kept=kept if recover.features else None, tokenizer=tokenizer, progress=progress,
                checkpoint_dir=None if checkpoint_dir is None else f"{checkpoint_dir}/round-{k}",
                resume=resume, penalty=penalty)
            rows.append({"round": k, "budget": step, "slim": _summary(report), "recovery": record.to_json()})
            if k == 1:
                first = report
    return current_model, _final_report(report, first, kept, rows, kind, value, rounds)


def _budget(slim_kwargs: dict) -> tuple:
    """(kind, value) of the one budget given: a kind's name, "ratio", or from budget=."""
    given = [(k, slim_kwargs[k]) for k in budget_keywords() if slim_kwargs.get(k) is not None]
    if len(given) != 1:
        raise InputError(f"iterative slim was given {' and '.join(k for k, _ in given) or 'no budget'}: give exactly "
                         f"one of {', '.join((*BUDGET_KINDS, 'ratio'))}")
    name, value = given[0]
    if name == "budget":  # checked as slim checks it
        budget = budget_of({"budget": value})
        return budget.kind, budget.value
    return name, value


def _keyword(step: dict) -> dict:
    """slim's keyword for a round's budget {kind: value}: ratio=, else budget= (any registered kind)."""
    (kind, value), = step.items()
    return {"ratio": value} if kind == "ratio" else {"budget": Budget(kind, value)}


def _round_budget(kind, value, k, rounds, original, current_model, example_inputs, rest, original_figure, rows):
    """Round k's budget {kind: value}: a step a fraction k/K of the way, geometrically, stated
    against the original (Budget.partial), restated for slim on the current model."""
    t = k / rounds
    if kind == "ratio":
        return {"ratio": 1 - (1 - value) ** (1 / rounds)}
    step = Budget(kind, value).partial(original_figure, t)
    if step.latency:  # stated against the original, which slim is given as the reference
        return {kind: step.value}
    full = _figure(original, example_inputs, kind, rest) if not rows else rows[0]["slim"]["figure_before"]
    now = _figure(current_model, example_inputs, kind, rest) if rows else full
    at = step.restated(step.figure(full), now)
    return {at.kind: at.value}


def _figure(model, example_inputs, kind: str, rest: dict) -> float:
    """The model's figure as slim's planner prices it: MACs or parameters of its convs and
    linears, or its predicted latency on the target (the kind's pricing)."""
    from ..plan.pricing import PricedModel
    row = BUDGET_KINDS[kind]
    lm = None
    if row.latency:
        from ..hardware import get_target
        from ..hardware.latency import latency_model, local_runtime
        from ..hardware.measure import OrtSettings
        target = get_target(rest.get("target") or "cpu")  # as slim prices a latency budget
        lm = latency_model(target, lut=rest.get("lut"),
                           runtime=local_runtime(target, OrtSettings(threads=rest.get("threads", 1))))
    return row.pricing(PricedModel(model, example_inputs), lm).full_figure


def compose_kept(outer: dict | None, inner: dict) -> dict:
    """Channels of the original that survive two cuts: inner indexes the once-cut model, so
    kept = outer[inner] per parameter and dim (a dim the inner cut left whole keeps outer's)."""
    if outer is None:
        return {k: {str(d): list(v) for d, v in dims.items()} for k, dims in inner.items()}
    out = {k: dict(dims) for k, dims in outer.items()}
    for fqn, dims in inner.items():
        for d, idx in dims.items():
            before = out.get(fqn, {}).get(str(d))
            out.setdefault(fqn, {})[str(d)] = list(idx) if before is None else [before[i] for i in idx]
    return out


def _summary(report: dict) -> dict:
    plan = report.get("plan") or {}
    return {"params": report["params"], "macs": report["macs"], "verify": report["verify"],
            "figure_before": plan.get("full"), "budget": plan.get("budget"),
            "predicted_after": plan.get("predicted_after"), "measured": plan.get("measured"),
            "groups_cut": sum(1 for g in report["groups"] if g["width_after"] < g["width_before"])}


def _final_report(report: dict, first: dict, kept: dict, rows: list, kind, value, rounds: int) -> dict:
    """The last round's report restated against the original model (its sections replaced in
    their places, "recover" added)."""
    from ..report import Report
    widths = {tuple(g["members"]): g["width_before"] for g in first["groups"]}
    restated = Report.of(report).with_sections({
        "kept": kept,
        "params": {"before": first["params"]["before"], "after": report["params"]["after"]},
        "macs": {"before": first["macs"]["before"], "after": report["macs"]["after"]},
        "groups": [g | {"width_before": widths.get(tuple(g["members"]), g["width_before"])}
                   for g in report["groups"]]})
    if report.get("plan"):  # the last round's plan, stated from the original with the user's budget
        plan, start = dict(report["plan"]), first["plan"]
        # "measured" stays the last round's: the original and the final cut, timed in one run
        plan |= {"budget": {"kind": kind, "value": value}, "round_budget": plan["budget"], "full": start.get("full"),
                 "predicted_before": start.get("predicted_before")}
        restated = restated.with_section("plan", plan)
    if "budget" in report.get("config", {}):
        restated = restated.with_section("config", report["config"] | {"budget": {kind: value}})
    return restated.with_section("recover", {"schedule": f"geometric, {rounds} rounds toward {kind} {value:g}",
                                             "rounds": rows}).to_json()
