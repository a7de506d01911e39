"""The slim report: what was cut, how it was verified, and what it cost (docs/report.md).

The keys and their order are the report's interface (`hwprune slim --json` writes them as
built here); the landing adds "plan" and "depth" (hwprune.plan.land).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .graph.macs import count_macs
from .graph.rules import DECLARED


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


def slim_report(a, slim_model: nn.Module, removed: np.ndarray, config, verified: dict, kept: dict,
                compensated: dict) -> dict:
    """The report of one verified cut of the analysis `a`: `removed` (a bool per channel label)
    cut from a.model gave slim_model; `verified` is the oracle's result, `kept` the surviving
    indices per parameter (ChannelGraph.param_kept), `compensated` the layers and reads folded."""
    graph = a.graph
    shapes_after = lambda t: graph.new_shape(t, removed)  # noqa: E731
    width_after = {g.id: int((~removed[g.labels]).sum()) for g in graph.groups}
    return {
        "hwprune_version": hwprune_version(),
        "trace": a.trace,
        "trace_note": graph.traced.note,
        "config": {"ratio": config.ratio, "importance": config.importance, "strict": config.strict,
                   "seed": config.seed, "prune_hidden": config.prune_hidden, "compensate": config.compensate,
                   "objective": config.objective},
        "params": {"before": count_params(a.model), "after": count_params(slim_model)},
        "macs": {"before": count_macs(graph.traced.graph, graph.shapes.__getitem__),
                 "after": count_macs(graph.traced.graph, shapes_after)},
        "verify": verified,
        "compensated": compensated,
        "groups": [group_json(g, width_after[g.id]) for g in graph.groups],
        "kept": {k: {str(d): v.tolist() for d, v in dims.items()} for k, dims in kept.items()},
        "declared_rules": sorted(f"{getattr(k, '__name__', k)}={fn.__name__}" for k, fn in DECLARED.items()),
    }
