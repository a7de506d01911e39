"""The cut stage: the planned channels cut out of a copy of the model (hwprune.surgery.cut),
with the compensation's folds where the run compensates; the Cut record it returns is what
the verify stage checks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..graph.groups import ChannelGraph
from ..graph.heads import head_changes
from ..graph.masked import tensors_of
from ..graph.trace import GRAPH
from ..progress import tick
from . import cut
from .owned_sizes import owned_sizes


@dataclass(frozen=True, eq=False)
class Cut:
    """One cut of an analysis: `removed` (a bool per channel label of analysis.graph) cut from
    analysis.model gave `model`. kept: the surviving indices per parameter and dim
    (ChannelGraph.param_kept); fills: {reader: (dim, means)} where removed channels are read
    as their means (compensate), for the oracle; compensated: the layers folded and reads;
    frozen: each group's frozen reason when it was cut (a later cut of the same analysis may
    freeze more: the landing's tries, the repair)."""
    analysis: object  # hwprune.analysis.Analysis
    removed: np.ndarray
    model: nn.Module
    kept: dict
    fills: dict
    compensated: dict
    frozen: tuple
    params_before: int | None = None  # counted before an in-place cut, which leaves no original to count


def cut_model(a, removed: np.ndarray, config, progress=None) -> Cut:
    """Cut `removed` from the analysis `a` as config (a SlimConfig) says: the surgery, then,
    where config.compensate, each removed channel's mean folded into the bias of the layer
    that reads it (hwprune.compensate). Under config.in_place the surgery replaces a.model's
    own tensors (surgery.slice_in_place) and the Cut's model is a.model."""
    graph = a.graph
    tick(progress, "cut", 0, 1)
    kept = graph.param_kept(removed)
    shapes = (graph.shapes.__getitem__, lambda t: graph.new_shape(t, removed)) if a.trace == GRAPH else None
    heads = head_changes(graph, removed) if shapes is None else None
    # sizes kept as module attributes follow the cut only where mask equivalence will check them:
    # output fidelity (prune_hidden) passes any model that runs
    sizes = owned_sizes(graph, removed) if shapes is None and not config.prune_hidden else None
    fills, deltas = {}, {}
    if config.compensate:  # measured on the original's tensors, so before an in-place cut replaces them
        from ..compensate import bias_deltas, compensation_of, fills_for
        folds, means = compensation_of(a)
        fills = fills_for(graph, folds, means, removed)
        deltas = bias_deltas(folds, fills, tensors_of(a.model))
    before = sum(p.numel() for p in a.model.parameters()) if config.in_place else None
    slim_model = cut(a.model, kept, module_calls(graph, removed), shapes, heads, sizes, in_place=config.in_place)
    if shapes is None:
        slim_model.eval()
    folded = 0
    if config.compensate:
        from ..compensate import fold_biases
        folded = fold_biases(slim_model, deltas, kept)
    compensated = {"layers": folded, "reads": int(sum(int((f != 0).sum()) for _, f in fills.values()))}
    return Cut(a, removed, slim_model, kept, fills, compensated, tuple(g.frozen for g in graph.groups), before)


def module_calls(graph: ChannelGraph, removed: np.ndarray) -> dict:
    """{module path: (old, new) shape of the first tensor input of its first call}. Tensors made
    from the model's own weights alone are not inputs: a weight-standardized conv's first call
    reshapes its weight, and the conv's input is what its F.conv2d reads besides that weight."""
    calls = {}
    owner = {n: fqn.rpartition(".")[0] for n, (k, fqn) in graph.traced.placeholders.items() if k in ("param", "buffer")}
    static = set(owner)
    for node in graph.traced.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function":
            continue
        if all(a.name in static for a in node.all_input_nodes):
            static.add(node.name)
            continue
        # the innermost module on the stack; without one (fallback tracer), the module whose own tensor it reads
        path = list(stack.values())[-1][0] if stack else next(
            (owner[a.name] for a in node.all_input_nodes if a.name in owner), None)
        if path is None:
            continue
        first = next((a for a in node.args if isinstance(a, torch.fx.Node) and a.name in graph.shapes
                      and a.name not in static), None)
        if path not in calls and first is not None:
            calls[path] = (graph.shapes[first.name], graph.new_shape(first.name, removed))
    return calls
