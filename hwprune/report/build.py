"""The one place a slim report is built: from the records of the stages (the analysis the run
began with, its Plan and its Verified cut) to a Report (docs/report.md)."""
from __future__ import annotations

from torch import nn

from ..graph.macs import count_macs
from ..graph.rules import DECLARED
from .record import Report


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def group_json(g, width_after: int) -> dict:
    """One channel group as the report and `hwprune analyze --json` state it."""
    return {"id": g.id, "members": list(g.members), "width_before": g.width,
            "width_after": width_after, "frozen": g.frozen}


def hwprune_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("hwprune")
    except PackageNotFoundError:
        return "0+local"


def config_json(config, importance_why: str | None = None) -> dict:
    """The SlimConfig's fields the report states; importance_auto: why the default importance
    ("auto", hwprune.importance.auto) read the criterion it did (None where one was named)."""
    return {"ratio": config.ratio, "importance": config.importance, "importance_auto": importance_why,
            "strict": config.strict, "seed": config.seed,
            "prune_hidden": config.prune_hidden, "compensate": config.compensate, "objective": config.objective}


def slim_report(original, plan, verified, config, importance_why: str | None = None) -> Report:
    """The report of a run: `original` the Analysis it began with (its figures are "before":
    the plan may have removed residual blocks from it), `plan` (hwprune.plan.Plan) what was
    decided and how, `verified` (hwprune.verify.Verified) the cut and the oracle's result,
    `config` the run's SlimConfig, importance_why: see config_json. The plan's own sections
    ("lattice"; "plan", "depth") follow the core ones."""
    cut = verified.cut
    graph, removed = cut.analysis.graph, cut.removed
    width_after = {g.id: int((~removed[g.labels]).sum()) for g in graph.groups}
    report = Report(
        hwprune_version=hwprune_version(),
        trace=cut.analysis.trace,
        trace_note=graph.traced.note,
        config=config_json(config, importance_why) | dict(plan.config),
        params={"before": cut.params_before if cut.params_before is not None else count_params(original.model),
                "after": count_params(cut.model)},
        macs={"before": count_macs(original.graph.traced.graph, original.graph.shapes.__getitem__),
              "after": count_macs(graph.traced.graph, lambda t: graph.new_shape(t, removed))},
        verify=verified.result,
        compensated=dict(cut.compensated),
        groups=[group_json(g, width_after[g.id]) | {"frozen": why} for g, why in zip(graph.groups, cut.frozen)],
        kept={k: {str(d): v.tolist() for d, v in dims.items()} for k, dims in cut.kept.items()},
        declared_rules=sorted(f"{getattr(k, '__name__', k)}={fn.__name__}" for k, fn in DECLARED.items()))
    return report.with_sections(dict(plan.sections))
