"""The oracle: the slim model must equal the original with the removed channels zeroed where
they are consumed (mask equivalence).

The reference is computed independently of the surgery: the original traced graph is run
node by node with the original weights (hwprune.graph.masked), and every activation argument
of every op has its removed elements set to zero before the op reads it. Parameters are never
masked, so a removed channel's bias or BN shift reaches its consumer only through an
activation, where the mask catches it.

What to do when a cut fails the oracle (freeze the groups a size in forward does not follow,
and cut again) is hwprune.verify.repair.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import VerificationError
from ..graph.groups import ChannelGraph
from ..graph.masked import (
    along,
    float32_compute,
    half_to_float,
    is_half,
    random_like,
    removal_masks,
    run_masked,
    tensors_of,
    zero_removed,
)
from ..progress import tick

__all__ = ["Verified", "verify_cut", "verify", "expected_outputs", "compare", "verify_fidelity", "run_graph", "tensors_of", "along"]


@dataclass(frozen=True, eq=False)
class Verified:
    """The verify stage's record: a cut (hwprune.surgery.stage.Cut) that passed the oracle, and
    the oracle's figures (`result`: the report's "verify")."""
    cut: object
    result: dict


def verify_cut(cut, config, progress=None, expected: list | None = None) -> Verified:
    """The oracle on a Cut, or VerificationError: mask equivalence (removed channels read as
    their means where the cut folded them); output fidelity under config.prune_hidden, since
    norms over cut channels normalize over fewer. expected: the reference outputs taken before
    the cut (expected_outputs), where the cut replaced the original's tensors (in_place)."""
    a = cut.analysis
    tick(progress, "verify", 0, 1)
    if expected is None:
        expected = expected_outputs(a, cut.removed, config, cut.fills)
    return Verified(cut, compare(cut.model, expected, config, bool(cut.fills)))


def expected_outputs(a, removed: np.ndarray, config, fills: dict | None = None) -> list:
    """[(inputs, reference outputs)] of each verify batch, computed from the original's own
    tensors: the masked graph (mask equivalence), or under config.prune_hidden the original
    model's outputs. Only these outputs outlive the call, so an in-place cut can follow it."""
    batches = []
    masks = removal_masks(a.graph, removed) if not config.prune_hidden else None  # the same for every batch
    apply = _filled(fills) if fills else None
    half = is_half(a.model)  # compared in float32: see _outputs
    with torch.inference_mode():
        for b in range(config.verify_batches):
            x = a.example_inputs if b == 0 else random_like(a.example_inputs, seed=b)
            ref = (run_masked(a.graph, a.model, x, masks, apply, upcast=half) if masks is not None else
                   _outputs(a.model, x))
            batches.append((x, ref))
    return batches


def _outputs(model, x: tuple) -> list:
    """The model's tensor outputs; computed in float32 where it is in half precision, since
    two equivalent computations in bf16 differ by its rounding (~1e-2 over a decoder) and
    the oracle's tolerance (1e-4) would then say nothing."""
    if not is_half(model):
        return [t for t in torch.utils._pytree.tree_leaves(model(*x)) if isinstance(t, torch.Tensor)]
    with float32_compute(model):
        out = model(*torch.utils._pytree.tree_map(half_to_float, x))
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def compare(slim, expected: list, config, fills: bool = False) -> dict:
    """The oracle's figures for slim's outputs against `expected` (expected_outputs)."""
    if config.prune_hidden:
        return fidelity(slim, expected)
    return equivalence(slim, expected, config.rtol, fills)


def run_graph(graph: ChannelGraph, model, inputs: tuple, removed: np.ndarray | None = None) -> list:
    """Run the traced graph with `model`'s tensors; zero removed channels at every consumer."""
    return run_masked(graph, model, inputs, removal_masks(graph, removed) if removed is not None else {})


def _filled(fills: dict):
    """An `apply` for run_masked: zero the removed elements, then, where the reader is a layer
    that folds means (hwprune.compensate), add its fill ({reader: (dim, fill)})."""
    def apply(v, m, reader):
        x = zero_removed(v, m)
        if reader.name in fills and isinstance(x, torch.Tensor):
            d, fill = fills[reader.name]
            x = x + along(fill.to(x.dtype).to(x.device), d, x.dim())
        return x
    return apply


def verify(graph: ChannelGraph, original, slim, example: tuple, removed: np.ndarray,
           rtol: float = 1e-4, batches: int = 2, fills: dict | None = None) -> dict:
    """Compare slim(x) with the masked original on the example and on random inputs like it.
    fills: {reader: (dim, values)} where removed channels are read as their means (compensate)."""
    masks = removal_masks(graph, removed)  # the same for every batch
    apply = _filled(fills) if fills else None
    expected = []
    with torch.inference_mode():
        for b in range(batches):
            x = example if b == 0 else random_like(example, seed=b)
            expected.append((x, run_masked(graph, original, x, masks, apply, upcast=is_half(original))))
    return equivalence(slim, expected, rtol, bool(fills))


def equivalence(slim, expected: list, rtol: float, fills: bool = False) -> dict:
    """Mask equivalence of slim's outputs with the masked original's, `expected`
    ([(inputs, outputs)]), or VerificationError."""
    from ..numerics import max_errors
    worst_abs, worst_rel = 0.0, 0.0
    with torch.inference_mode():
        for x, ref in expected:
            got = _run_slim(slim, x, ref)
            for a, r in zip(got, ref):
                ea, er = max_errors(a, r)
                worst_abs, worst_rel = max(worst_abs, ea), max(worst_rel, er)
    mode = "mask equivalence" + (" (removed channels read as their means where folded)" if fills else "")
    result = {"mode": mode, "max_abs_err": worst_abs, "max_rel_err": worst_rel, "rtol": rtol,
              "batches": len(expected), "passed": worst_rel <= rtol}
    if not result["passed"]:
        raise VerificationError(
            f"the slim model is not mask-equivalent to the original: max relative error {worst_rel:.3g} "
            f"> {rtol:g}. This is a bug in a channel rule or cutter; please report it with the model")
    return result


def verify_fidelity(original, slim, example: tuple, batches: int = 2) -> dict:
    """--prune-hidden: how close slim(x) stays to original(x). Mask equivalence does not hold by
    design (a norm over cut channels normalizes over fewer), so this passes when the slim model
    runs and its outputs keep the original's shapes; the figures say how close it came."""
    expected = []
    with torch.inference_mode():
        for b in range(batches):
            x = example if b == 0 else random_like(example, seed=b)
            expected.append((x, _outputs(original, x)))
    return fidelity(slim, expected)


def fidelity(slim, expected: list) -> dict:
    """Output fidelity of slim against the original's outputs, `expected` ([(inputs, outputs)])."""
    from ..numerics import max_errors
    worst_abs, worst_rel, cos = 0.0, 0.0, 1.0
    with torch.inference_mode():
        for x, want in expected:
            got = _run_slim(slim, x, want)
            for a, r in zip(got, want):
                ea, er = max_errors(a, r)
                worst_abs, worst_rel = max(worst_abs, ea), max(worst_rel, er)
                if a.is_floating_point() and a.numel() > 1:
                    c = torch.nn.functional.cosine_similarity(a.flatten().double(), r.flatten().double(), dim=0)
                    cos = min(cos, float(c))
    return {"mode": "output fidelity (--prune-hidden: not mask-equivalent)", "max_abs_err": worst_abs,
            "max_rel_err": worst_rel, "min_cosine": cos, "batches": len(expected), "passed": True}


def _run_slim(slim, x: tuple, ref: list) -> list:
    try:
        got = _outputs(slim, x)
    except Exception as e:
        raise VerificationError(
            f"the slim model fails to run: {type(e).__name__}: {str(e).splitlines()[0][:300]}. "
            "A size in forward did not follow the cut; freeze that group (it is in the report) "
            "or register a cutter for the module that owns the size") from e
    if len(got) != len(ref) or any(a.shape != r.shape for a, r in zip(got, ref)):
        raise VerificationError(
            f"the slim model's outputs {[tuple(a.shape) for a in got]} differ in shape from the "
            f"original's {[tuple(r.shape) for r in ref]}")
    return got
