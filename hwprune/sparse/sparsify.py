"""sparsify: zero weights by a pattern, swap block-sparse layers to BSR, prove, report.

    model, report = hwprune.sparsify(model, example_inputs, sparsity=0.9, pattern="block:32")

The proof, before anything is returned: (1) every sparse layer's effective weight equals the
original's weight times its mask, exactly; (2) the sparse model's outputs equal those of an
independent reference, a copy of the original with the masked weights zeroed, on the example
inputs and on random inputs like them (relative error at most rtol). The original model is
never modified.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from .keep import mark
from .layers import kernel_name, kind_of, select_layers, set_module
from .masks import SCOPES, Pattern, compute_masks
from .per_layer import ChooseConfig, sparsify_per_layer
from .proof import prove


@dataclass(frozen=True)
class SparsifyConfig:
    sparsity: float
    pattern: Pattern
    scope: str = "global"
    layers: str = "*"

    @classmethod
    def make(cls, sparsity, pattern: str, scope: str, layers: str) -> "SparsifyConfig":
        p = Pattern.parse(pattern)
        if p.kind == "2:4":
            if sparsity not in (None, 0.5):
                raise InputError(f"sparsity {sparsity}: 2:4 keeps 2 of every 4 weights, so it is 0.5 by "
                                 "construction: drop --sparsity or give 0.5")
            sparsity = 0.5
        if sparsity is None or not 0.0 < float(sparsity) < 1.0:
            raise InputError(f"sparsity {sparsity}: give the fraction of weights to zero, strictly between 0 and 1 "
                             "(for example 0.9), or a speedup to choose each layer's form")
        if scope not in SCOPES:
            raise InputError(f"scope {scope!r} is unknown: choose {' or '.join(SCOPES)}")
        return cls(float(sparsity), p, scope, layers or "*")


def config_of(sparsity=None, pattern: str | None = None, scope: str | None = None, layers: str | None = "*",
              speedup=None, target: str | None = None, block: int | None = None):
    """The run's configuration: a SparsifyConfig (one pattern at a sparsity, --sparsity) or a
    per_layer.ChooseConfig (each layer's form chosen for a latency speedup, --speedup); the
    two sets of keywords do not mix, and what was given is named where they do."""
    if speedup is not None:
        given = [f"{k} {v!r}" for k, v in (("sparsity", sparsity), ("pattern", pattern), ("scope", scope))
                 if v is not None]
        if given:
            raise InputError(f"{' and '.join(given)} with speedup {speedup}: --sparsity/--pattern/--scope zero one "
                             "pattern in every layer, --speedup chooses each layer's form (width, BSR or 2:4); give "
                             "one or the other (the BSR block of --speedup is --block)")
        return ChooseConfig.make(speedup, target, block, layers)
    given = [f"{k} {v!r}" for k, v in (("target", target), ("block", block)) if v is not None]
    if given:
        raise InputError(f"{' and '.join(given)} without speedup: --target and --block only set how --speedup X "
                         "chooses each layer's form; add --speedup X, or drop them (a block pattern is "
                         "--pattern block:B)")
    return SparsifyConfig.make(sparsity, pattern or "unstructured", scope or "global", layers)


def sparsify(model: nn.Module, example_inputs, *, sparsity: float | None = None, pattern: str | None = None,
             scope: str | None = None, layers: str = "*", speedup: float | None = None, target: str | None = None,
             block: int | None = None, latency=None, rtol: float = 1e-4) -> tuple:
    """A sparse copy of `model` and its report; raises VerificationError if the proof fails.

    Either sparsity (with pattern, default "unstructured", and scope, default "global"): one
    pattern zeroes that fraction of every selected layer's weights; or speedup (with target,
    default "cpu", and block, default 32): each selected layer gets the form (narrower dense,
    BSR at a sparsity, 2:4) keeping the most weight energy within its dense latency / speedup,
    priced by the target's latency model or `latency(kind, tokens, in, out, keep) -> ms`
    (hwprune.sparse.per_layer)."""
    config = config_of(sparsity, pattern, scope, layers, speedup, target, block)
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not isinstance(config, SparsifyConfig):
        return sparsify_per_layer(model, inputs, config, latency=latency, rtol=rtol)
    if latency is not None:
        raise InputError("latency= prices the per-layer choice of speedup=: give speedup, or drop latency")
    taken, skipped = select_layers(model, config.layers, config.pattern)
    weights = {n: kind_of(m).weight(m) for n, m in taken.items()}
    masks = compute_masks(weights, config.pattern, config.sparsity, config.scope)
    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            layer = sparse.get_submodule(name)
            layer.weight.mul_(mask.view(layer.weight.shape).to(layer.weight.dtype))
            if config.pattern.kind == "block":
                set_module(sparse, name, kind_of(layer).to_bsr(layer, config.pattern.block))
            else:  # zeros in a dense weight: finetune keeps them zero (hwprune.sparse.keep)
                mark(layer, config.pattern.name)
    proof = prove(model, sparse, masks, inputs, rtol=rtol)
    rows = [{"layer": n, "type": type(taken[n]).__name__, "shape": list(weights[n].shape),
             "pattern": config.pattern.name, "block": config.pattern.block,
             "sparsity": round(1.0 - masks[n].float().mean().item(), 6),
             "kernel": kernel_name(config.pattern, weights[n])}
            for n in masks]
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    report = {"config": {"mode": "one pattern", "sparsity": config.sparsity, "pattern": config.pattern.name,
                         "scope": config.scope, "layers": config.layers},
              "layers": rows, "skipped": [{"layer": n, "why": why} for n, why in skipped],
              "weights": {"in_layers": total, "zeroed": total - kept, "sparsity": (total - kept) / total},
              "verify": proof}
    return sparse.train(model.training), report
