"""hwprune: hardware-aware structured pruning for PyTorch.

Public API only:
    slim(model, example_inputs, ratio=0.5, importance="l2", strict=False) -> (slim_model, report)
    slim(analysis, ratio=0.5, ...) -> (slim_model, report)   (no second trace)
    analyze(model, example_inputs) -> Analysis
    apply(report, model, example_inputs) -> slim_model
    declare_rule(op_or_function, like="elementwise")
"""
from .api import Analysis, analyze, apply, slim
from .config import SlimConfig
from .graph.rules import declare_rule
from .errors import (BudgetError, FrozenGroupError, HwpruneError, InputError, ModelLoadError,
                     NothingToPruneError, TraceError, VerificationError)

__all__ = [
    "slim", "analyze", "apply", "Analysis", "SlimConfig", "declare_rule",
    "HwpruneError", "ModelLoadError", "InputError", "TraceError", "FrozenGroupError",
    "NothingToPruneError", "VerificationError", "BudgetError",
]
