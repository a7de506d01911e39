"""The analysis stage: trace the model and find its coupled channel groups (trace -> group).

`Analysis` holds the trace and the groups so that slim, apply and the landing's block
search share them instead of tracing twice; nothing is cut here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from .errors import FrozenGroupError, NothingToPruneError
from .graph.groups import BOUNDARY_REASONS, ChannelGraph, build_channel_graph
from .graph.macs import count_macs
from .graph.trace import check_inputs, input_tuple, is_exported_graph, trace
from .progress import tick
from .report import count_params, group_json
from .surgery import data_buffers, has_cutter


@dataclass(frozen=True)
class Analysis:
    """The record of the trace and group stages: a traced model and its channel groups, what
    can be cut, and what is frozen and why. Frozen; a run's calibration inputs are bound with
    `with_calibration` (a new Analysis). The groups' `frozen` reasons are the one thing a later
    stage sets (the verify stage's repair), which is why slim works on a `fresh()` copy."""
    model: nn.Module
    example_inputs: tuple
    graph: ChannelGraph
    custom_rules: tuple = ()  # SlimConfig.custom_rules the groups were built with
    calibration: list | None = None  # the inputs slim measures importance and means on
    # what is measured once on this analysis and kept (hwprune.compensate's folds and means)
    memo: dict = field(default_factory=dict, repr=False, compare=False)

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
        return {"trace": self.trace, "params": count_params(self.model),
                "macs": count_macs(self.graph.traced.graph, self.graph.shapes.__getitem__),
                "groups": [group_json(g, g.width) for g in self.groups],
                "prunable_groups": len(self.prunable), "frozen_groups": len(self.groups) - len(self.prunable),
                "custom_functions": [f[0] for f in self.graph.traced.functions]}

    def fresh(self) -> "Analysis":
        """A copy whose groups can be frozen (as slim does when a cut fails) without touching this one."""
        groups = [dataclasses.replace(g) for g in self.graph.groups]
        return dataclasses.replace(self, graph=dataclasses.replace(self.graph, groups=groups), memo=dict(self.memo))

    def with_calibration(self, calibration: list | None) -> "Analysis":
        """This analysis measuring on `calibration` (what it measured on other inputs is dropped)."""
        if calibration is self.calibration:
            return self
        return dataclasses.replace(self, calibration=calibration, memo={})

    def explain(self) -> str:
        lines = [f"traced with {self.trace}: {len(self.groups)} channel groups, "
                 f"{len(self.prunable)} prunable, {len(self.groups) - len(self.prunable)} frozen"]
        for g in self.groups:
            head = ", ".join(g.members[:3]) + (f" (+{len(g.members) - 3})" if len(g.members) > 3 else "")
            state = "prunable" if g.frozen is None else f"frozen: {g.frozen}"
            lines.append(f"  group {g.id} width {g.width} [{head}] {state}")
        return "\n".join(lines)


def analyze(model: nn.Module, example_inputs, *, config=None, progress=None) -> Analysis:
    """Trace the model and find its coupled channel groups; nothing is cut.
    config: a SlimConfig (its custom_rules and prune_hidden decide the groups)."""
    example_inputs = input_tuple(example_inputs)
    if not is_exported_graph(model):  # an exported graph keeps the mode it was exported in
        model.eval()
    tick(progress, "check inputs", 0, 3)
    check_inputs(model, example_inputs)
    tick(progress, "trace", 1, 3)
    traced = trace(model, example_inputs)
    tick(progress, "group", 2, 3)
    rules = grouping_rules(config)
    graph = build_channel_graph(traced, model, rules, has_cutter=has_cutter, data_buffers=data_buffers)
    tick(progress, "group", 3, 3)
    return Analysis(model, example_inputs, graph, rules)


def grouping_rules(config) -> tuple:
    """The rules groups are built with: the config's own, and under prune_hidden the norms'
    (no config: none)."""
    from .graph.rules.norm import hidden_rules
    if config is None:
        return ()
    return tuple(config.custom_rules) + (hidden_rules() if config.prune_hidden else ())


def check_prunable(a: Analysis, config) -> None:
    """FrozenGroupError under config.strict where a group is frozen that need not be (inputs
    and outputs always are); NothingToPruneError where no group can be cut."""
    frozen = [g for g in a.groups if g.frozen is not None]
    avoidable = [g for g in frozen if g.frozen not in BOUNDARY_REASONS]
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
