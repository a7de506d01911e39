"""hwprune as one pass of a deployment pipeline.

    slim_pass = hwprune.SlimPass(target="jetson", speedup=2)
    slim_model = slim_pass(model, example_inputs)
    slim_pass.report                      # the report of the last call, as `hwprune slim` writes it

A SlimPass is its configuration (the fields given) plus the report of its last call.
It never modifies the model it is given. With a budget of latency on a target (the default),
the report also has "latency_ms": predicted before and after on the target and, where the
target is this machine, measured before and after, interleaved in one run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .plan.kinds import DEFAULT_SPEEDUP, budget_keywords

__all__ = ["DEFAULT_SPEEDUP", "SlimPass"]


@dataclass(eq=False)
class SlimPass:
    target: str = "cpu"
    speedup: float | None = None
    ratio: float | None = None
    latency_ms: float | None = None
    flops: float | None = None
    params: float | None = None
    importance: str = "auto"  # see hwprune.slim
    lut: str | None = None
    threads: int = 1
    min_width: int | None = None
    prune_hidden: bool = False  # see hwprune.slim
    allow_block_removal: bool = False
    compensate: bool = False  # see hwprune.slim
    objective: str = "balanced"  # see hwprune.slim
    measure: bool = True  # measure before and after where the target is this machine
    progress: object = None  # progress(stage, done, total), as hwprune.slim takes
    budget: object = None  # a hwprune.plan.kinds.Budget of any registered kind, instead of the keywords
    report: dict | None = field(default=None, init=False)

    def __post_init__(self):
        from .hardware import get_target
        get_target(self.target)  # an unknown target fails here, not after the cut
        if self._budget() is None:
            self.speedup = DEFAULT_SPEEDUP

    def _budget(self) -> dict | None:
        given = {k: getattr(self, k, None) for k in budget_keywords()}
        given = {k: v for k, v in given.items() if v is not None}
        return given or None

    def __call__(self, model, example_inputs):
        """The slim model (a new module of the same class); the report goes to self.report."""
        from .api import slim
        from .graph.trace import input_tuple
        from .hardware import get_target
        from .hardware.compare import latency_compare
        from .hardware.measure import OrtSettings
        from .report import Report

        inputs = input_tuple(example_inputs)
        slim_model, report = slim(model, inputs, **self._budget(), importance=self.importance, target=self.target,
                                  lut=self.lut, threads=self.threads, min_width=self.min_width,
                                  prune_hidden=self.prune_hidden, allow_block_removal=self.allow_block_removal,
                                  compensate=self.compensate, objective=self.objective, progress=self.progress,
                                  in_place=False)  # the original is measured against the slim model below
        latency = latency_compare(model, slim_model, inputs, get_target(self.target), lut=self.lut,
                                  settings=OrtSettings(threads=self.threads), measure=self.measure,
                                  progress=self.progress)
        self.report = Report.of(report).with_section("latency_ms", latency).to_json()
        return slim_model
