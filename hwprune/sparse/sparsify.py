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
import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError, VerificationError
from . import ops
from .keep import mark
from .layers import kind_of
from .masks import SCOPES, Pattern, compute_masks, fits


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


def select_layers(model: nn.Module, layers: str, pattern: Pattern | None = None) -> tuple:
    """(taken {name: module}, skipped [(name, reason)]) of the layers that match --layers and
    can take `pattern` (None: any of sparsify's forms)."""
    candidates = [(n, m) for n, m in model.named_modules() if kind_of(m) is not None]
    globs = [g.strip() for g in layers.split(",") if g.strip()]
    matching = [(n, m) for n, m in candidates if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not matching:
        names = ", ".join(n for n, _ in candidates[:4]) + (", ..." if len(candidates) > 4 else "")
        raise InputError(f"--layers {layers!r} matches none of the model's {len(candidates)} linear and conv "
                         f"layers ({names or 'none'}): give globs over module names, comma-separated, such as "
                         "'*.intermediate.dense,*.layer.?.output.dense'")
    taken, skipped = {}, []
    for name, module in matching:
        kind = kind_of(module)
        why = kind.why_not(module) or (fits(kind.weight(module).shape, pattern) if pattern is not None else None)
        (skipped.append((name, why)) if why else taken.__setitem__(name, module))
    if not taken:
        what = f"can take pattern {pattern.name}" if pattern is not None else "is a linear or an unpadded 1x1 conv"
        fix = "choose another pattern or --layers" if pattern is not None else "choose other --layers"
        raise InputError(f"no layer matching --layers {layers!r} {what}: {skipped[0][0]}: {skipped[0][1]}; {fix}")
    return taken, skipped


def _kernel(pattern: Pattern, weight: torch.Tensor) -> str:
    if pattern.kind == "block":
        name = ops.kernel_for(weight.device, weight.dtype)
        return {"native": "hwprune::bsr_linear, native CPU kernel", "triton": "hwprune::bsr_linear, Triton",
                "reference": "hwprune::bsr_linear, PyTorch reference (native kernel not built)"}[name]
    if pattern.kind == "2:4":
        return ("dense with zeros here; torch semi-structured sparse (to_semi_structured) on sm80+ GPUs, "
                "TensorRT sparse weights")
    return "dense F.linear/conv with zeros"


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _effective_weight(module: nn.Module) -> torch.Tensor:
    if hasattr(module, "dense_weight"):
        return module.dense_weight()
    return kind_of(module).weight(module).detach()


def config_of(sparsity=None, pattern: str | None = None, scope: str | None = None, layers: str | None = "*",
              speedup=None, target: str | None = None, block: int | None = None):
    """The run's configuration: a SparsifyConfig (one pattern at a sparsity, --sparsity) or a
    per_layer.ChooseConfig (each layer's form chosen for a latency speedup, --speedup); the
    two sets of keywords do not mix, and what was given is named where they do."""
    from .per_layer import ChooseConfig

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
        from .per_layer import sparsify_per_layer
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
                _set_module(sparse, name, kind_of(layer).to_bsr(layer, config.pattern.block))
            else:  # zeros in a dense weight: finetune keeps them zero (hwprune.sparse.keep)
                mark(layer, config.pattern.name)
    proof = prove(model, sparse, masks, inputs, rtol=rtol)
    rows = [{"layer": n, "type": type(taken[n]).__name__, "shape": list(weights[n].shape),
             "pattern": config.pattern.name, "block": config.pattern.block,
             "sparsity": round(1.0 - masks[n].float().mean().item(), 6), "kernel": _kernel(config.pattern, weights[n])}
            for n in masks]
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    report = {"config": {"mode": "one pattern", "sparsity": config.sparsity, "pattern": config.pattern.name, "scope": config.scope,
                         "layers": config.layers},
              "layers": rows, "skipped": [{"layer": n, "why": why} for n, why in skipped],
              "weights": {"in_layers": total, "zeroed": total - kept, "sparsity": (total - kept) / total},
              "verify": proof}
    return sparse.train(model.training), report


def prove(original: nn.Module, sparse: nn.Module, masks: dict, inputs: tuple, *, rtol: float = 1e-4,
          batches: int = 2, kept: dict | None = None) -> dict:
    """Check `sparse` against the original with weight * mask, layer by layer and output by output.
    masks: {layer: (out x in) mask of the original's weight}. kept: {layer: (rows, cols)}, the
    original's outputs and inputs a narrowed layer kept (None: all); its weight must equal the
    masked original's at those rows and columns. A width cut is proven by masking the columns
    of the layer that consumed the removed channels: the reference then ignores them."""
    from ..numerics import max_errors
    from ..graph.masked import random_like

    reference = copy.deepcopy(original).eval()
    kept = kept or {}
    with torch.no_grad():
        for name, mask in masks.items():
            w = reference.get_submodule(name).weight
            w.mul_(mask.view(w.shape).to(w.dtype))
            want = kind_of(reference.get_submodule(name)).weight(reference.get_submodule(name)).detach()
            rows, cols = kept.get(name, (None, None))
            want = want if rows is None else want[rows]
            want = want if cols is None else want[:, cols]
            got = _effective_weight(sparse.get_submodule(name))
            if got.shape != want.shape or not torch.equal(got, want):
                raise VerificationError(f"layer {name}: the sparse model's weight is not the original's with the "
                                        "masked weights zeroed; this is a bug in sparsify, please report it")
    sparse_mode = sparse.training
    sparse.eval()
    worst_abs = worst_rel = 0.0
    try:
        with torch.inference_mode():
            for b in range(batches):
                x = inputs if b == 0 else random_like(inputs, seed=b)
                want = [t for t in torch.utils._pytree.tree_leaves(reference(*x)) if isinstance(t, torch.Tensor)]
                got = [t for t in torch.utils._pytree.tree_leaves(sparse(*x)) if isinstance(t, torch.Tensor)]
                for a, r in zip(got, want, strict=True):
                    ea, er = max_errors(a, r)
                    worst_abs, worst_rel = max(worst_abs, ea), max(worst_rel, er)
    finally:
        sparse.train(sparse_mode)
    if worst_rel > rtol:
        raise VerificationError(f"the sparse model does not equal the original with its masked weights zeroed: "
                                f"max relative error {worst_rel:.3g} > {rtol:g}; nothing is written")
    return {"mode": "masked-weight equivalence", "max_abs_err": worst_abs, "max_rel_err": worst_rel, "rtol": rtol,
            "batches": batches, "passed": True}
