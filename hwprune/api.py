"""The pass as a list of named stages: analyze (trace -> group) -> score -> plan -> cut -> verify.

`slim` calls them in order; each is a public function of its own module:
hwprune.analysis (analyze), hwprune.importance.scorer (the score stage of a run),
hwprune.plan (widths to a cut) and hwprune.plan.land (a budget landed where it is measured),
hwprune.verify.repair (cut, verify, and freeze what a size in forward does not follow),
hwprune.report (the report).
"""
from __future__ import annotations

import inspect

from torch import nn

from .analysis import Analysis, analyze, check_prunable, grouping_rules
from .config import SlimConfig
from .errors import InputError, LatticeWarning
from .graph.trace import is_exported_graph
from .importance.fisher import calibration_batches
from .importance.scorer import scorer_for
from .plan import plan_widths, removed_from_kept
from .plan.kinds import budget_of
from .plan.land import LandingConfig, land
from .progress import tick
from .verify.repair import cut_verified

__all__ = ["Analysis", "analyze", "slim", "apply"]


def slim(model, example_inputs=None, *, ratio: float | None = None, importance: str = "l2",
         strict: bool = False, seed: int = 0, config: SlimConfig | None = None, progress=None,
         widths: dict | None = None, speedup: float | None = None, latency_ms: float | None = None,
         flops: float | None = None, params: float | None = None, target: str | None = None,
         lut: str | None = None, threads: int = 1, min_width: int | None = None, prune_hidden: bool = False,
         allow_block_removal: bool = False, calibration=None, compensate: bool = False,
         objective: str = "balanced", loss_fn=None, budget=None):
    """Cut `ratio` of every prunable group's channels; returns (slim model, report).

    Budgets instead of a ratio (give exactly one of ratio, speedup, latency_ms, flops, params, or
    budget, a hwprune.plan.kinds.Budget of any registered kind; none means ratio 0.5): widths per
    group are planned on `target`'s lattice for the most
    retained importance within the budget (hwprune.plan.budget). A latency budget without a
    target is priced on "cpu"; a MAC or parameter budget without one plans on the portable
    lattice (hwprune.hardware.lattice.PORTABLE), the same on every host. `lut` is a latency table,
    `threads` onnxruntime's threads on cpu, `min_width` the narrowest a group may become.
    prune_hidden: also cut the hidden size; norms over it change, so the result is checked by output
    fidelity (report["verify"]["mode"] says so). Analyze with SlimConfig(prune_hidden=True) to match.
    allow_block_removal: with a budget, residual blocks may be removed whole where that
    keeps more importance than cutting width for the same budget (hwprune.plan.depth).
    calibration: inputs for the criteria that measure on inputs (hwprune.importance.data_criteria():
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
    The slim model is verified mask-equivalent before it is returned (VerificationError otherwise).
    config: a SlimConfig instead of the keywords it holds (ratio, importance, strict, seed,
    prune_hidden, compensate, objective); given with any of them, InputError."""
    budget = budget_of({"ratio": ratio, "speedup": speedup, "latency_ms": latency_ms, "flops": flops,
                        "params": params, "budget": budget, "widths": widths}, allow_block_removal)
    config = _config_of(config, ratio=ratio, importance=importance, strict=strict, seed=seed,
                        prune_hidden=prune_hidden, compensate=compensate, objective=objective)
    a = _analysis_for(model, example_inputs, config, progress)  # trace -> group
    check_prunable(a, config)
    tick(progress, "score", 0, 1)
    scorer = scorer_for(a, config, calibration, loss_fn, progress)
    scores = scorer(a)
    if budget is not None:  # plan -> cut -> verify, until it lands
        how = LandingConfig(target=target, lut=lut, threads=threads, min_width=min_width,
                            allow_block_removal=allow_block_removal)
        return land(a, scores, config, budget, how, scorer, progress)
    lattice_note = None
    if widths is None:
        widths, lattice_note = _ratio_widths(a, config.ratio, target)
    try:
        cuts = plan_widths(a.groups, scores, widths)  # plan
    except ValueError as e:
        raise InputError(f"widths: {e}") from e
    slim_model, report = cut_verified(a, a.graph.removed_of(cuts), config, progress)  # cut -> verify
    return slim_model, report if lattice_note is None else report | {"lattice": lattice_note}


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


def _ratio_widths(a: Analysis, ratio: float, target: str | None) -> tuple:
    """Uniform widths for a ratio: on the target's lattice where one is named; without one,
    as the ratio says, with a warning for each width off the portable lattice (the CPU's AVX2
    fast path and fp16 tensor cores want 8)."""
    import warnings

    from .hardware import get_target
    from .hardware.lattice import lattice_for
    from .plan.budget import off_lattice, uniform_widths
    lattice, source = lattice_for(get_target(target) if target is not None else None)
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
        a.calibration = calibration_batches(a.example_inputs, calibration)
    slim_model, _ = cut_verified(a, removed, config, progress)
    return slim_model
