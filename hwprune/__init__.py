"""hwprune: hardware-aware structured pruning for PyTorch.

Public API only:
    slim(model, example_inputs, ratio=0.5, importance="l2", strict=False) -> (slim_model, report)
    slim(analysis, ratio=0.5, ...) -> (slim_model, report)   (no second trace)
    analyze(model, example_inputs) -> Analysis
    apply(report, model, example_inputs) -> slim_model
    declare_rule(op_or_function, like="elementwise")
    SlimPass(target="jetson", speedup=2)(model, example_inputs) -> slim_model; .report
    Budget(kind, value): a budget of any kind in hwprune.plan.kinds.BUDGET_KINDS, for slim(budget=...)
    load_pretrained(dir) -> a pruned Hugging Face model that save_pretrained wrote
    finetune(slim_model, original, data, config=RecoverConfig(...)) -> (model, RecoverRecord)
    iterative_slim(model, example_inputs, data, rounds=K, recover=RecoverConfig(...), **slim_kwargs)
        -> (model, report)
    GroupLasso(analysis, lam), BNL1(lam): training-time penalties, penalty(model) -> scalar
    sparsify(model, example_inputs, sparsity=0.9, pattern="block:32") -> (sparse_model, report)
    sparsify(model, example_inputs, speedup=2, target="cpu") -> each layer's form chosen (width, BSR, 2:4)
"""
from .api import Analysis, analyze, apply, slim
from .config import SlimConfig
from .graph.rules import declare_rule
from .hf import load_pretrained
from .pipeline import SlimPass
from .plan.kinds import Budget
from .recover import RecoverConfig, RecoverRecord, finetune, iterative_slim
from .recover.regularize import BNL1, GroupLasso
from .sparse import sparsify
from .errors import (BudgetError, BudgetWarning, FrozenGroupError, HwpruneError, InputError, LatticeWarning,
                     ModelLoadError, NothingToPruneError, TraceError, VerificationError)

__all__ = [
    "slim", "analyze", "apply", "Analysis", "SlimConfig", "declare_rule", "SlimPass", "Budget", "load_pretrained",
    "sparsify",
    "finetune", "iterative_slim", "RecoverConfig", "RecoverRecord",
    "GroupLasso", "BNL1",
    "HwpruneError", "ModelLoadError", "InputError", "TraceError", "FrozenGroupError",
    "NothingToPruneError", "VerificationError", "BudgetError", "BudgetWarning", "LatticeWarning",
]
