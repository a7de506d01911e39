"""The proof of a sparse model: it equals the original with its masked weights zeroed (and,
where a width cut removed channels, with their consumer's columns zeroed), layer by layer and
output by output, before anything is returned or written."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import VerificationError
from .layers import effective_weight, kind_of


def prove(original: nn.Module, sparse: nn.Module, masks: dict, inputs: tuple, *, rtol: float = 1e-4,
          batches: int = 2, kept: dict | None = None) -> dict:
    """Check `sparse` against the original with weight * mask, layer by layer and output by output.
    masks: {layer: (out x in) mask of the original's weight}. kept: {layer: (rows, cols)}, the
    original's outputs and inputs a narrowed layer kept (None: all); its weight must equal the
    masked original's at those rows and columns. A width cut is proven by masking the columns
    of the layer that consumed the removed channels: the reference then ignores them."""
    from ..graph.masked import random_like
    from ..numerics import max_errors

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
            got = effective_weight(sparse.get_submodule(name))
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
