"""Fisher importance: how much the model's output moves when a channel is removed, measured
on calibration inputs.

Removing a channel zeroes it wherever it is consumed (mask equivalence). Put a gate g_c = 1
on every read of channel c by an op where the channel ends (a linear or conv that mixes it
away; heads included: one gate per head), and the first-order change of the output when c
goes is dOut/dg_c. Ops it only passes through (activations, adds, reshapes) get no gate, or
the channel would be counted once per op on its way. Its
expected squared norm over inputs, E||dOut/dg_c||^2, is the diagonal of the Fisher
information of the gates (Kwon et al., "A Fast Post-Training Pruning Framework for
Transformers", 2022, use it for heads and neurons). It is estimated with random output
projections: for r ~ N(0, I), E_r[(d<Out, r>/dg_c)^2] = ||dOut/dg_c||^2, so one backward
pass per projection gives every channel's figure at once.

Unlike weight magnitudes, these figures are in one unit for every group (squared output
change), so the planner compares a head with a neuron directly instead of per parameter.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from ..graph.masked import along, run_masked, tensor_placeholders
from .registry import Needs, ScoreContext, criterion

DRAWS = 16  # random projections in all, at least


@criterion("fisher", Needs.INPUTS, across_groups=True,
           summary="E||dOut/dg_c||^2: the squared output change of removing each channel, on calibration inputs")
def fisher_criterion(ctx: ScoreContext) -> list:
    return fisher(ctx.graph, ctx.model, ctx.calibration, ctx.seed, ctx.progress, ctx.removed, ctx.compensation)


def fisher(graph, model, calibration: list, seed: int = 0, progress=None, removed=None, compensation=None) -> list:
    """One array of channel scores per group: E||dOut/dg_c||^2 over the calibration inputs,
    each a tuple shaped like the example inputs the graph was traced with. `removed` (a bool
    per channel label): those channels' gates are 0, so the figures are of the model with
    them cut (the gradient is still taken at every gate). compensation: (folds, means) of
    hwprune.compensate: where a layer will read a removed channel as its mean m, the gate
    runs from m to the channel (m + g (x - m)), so the figure is of removing it that way."""
    prunable = prunable_labels(graph)
    gates = gated_dims(graph, prunable)
    if compensation is not None:
        folds, means = compensation
        centred = {(f.tensor, f.dim, f.reader): means[(f.tensor, f.dim)] for f in folds if (f.tensor, f.dim) in means}
        gates = {t: [(d, lab, readers, {r: centred[(t, d, r)] for r in readers if (t, d, r) in centred})
                     for d, lab, readers in dims] for t, dims in gates.items()}
    gen = torch.Generator().manual_seed(seed)
    total = np.zeros(len(prunable))
    draws = max(1, math.ceil(DRAWS / len(calibration)))
    steps = len(calibration) * draws
    for i, x in enumerate(calibration):
        for k in range(draws):
            g = torch.ones(len(prunable), dtype=torch.float64)
            if removed is not None:
                g[torch.from_numpy(np.asarray(removed, dtype=bool))] = 0.0
            g.requires_grad_(True)
            outs = run_masked(graph, model, x, gates, lambda v, dims, reader: _gate(v, dims, reader, g))
            outs = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
            proj = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum() for o in outs)
            (grad,) = torch.autograd.grad(proj, g, allow_unused=True)
            if grad is not None:
                total += grad.detach().numpy() ** 2
            if progress is not None:
                progress("score", i * draws + k + 1, steps)
    total /= steps
    return [total[g.labels] for g in graph.groups]


def prunable_labels(graph) -> np.ndarray:
    """A bool per channel label: whether it is in a group that may be cut."""
    prunable = np.zeros(int(graph.labels.max()) + 1, dtype=bool)
    for g in graph.groups:
        if g.frozen is None:
            prunable[g.labels] = True
    return prunable


def gated_dims(graph, prunable: np.ndarray) -> dict:
    """{activation: [(dim, labels, readers)]}: each dim that carries a channel of an unfrozen
    group, gated where an op reads it and the channel ends there (a linear, a conv, a sum over
    it). Ops it passes through (activations, adds, reshapes, per-head attention products)
    are not gated, or a channel would count once per op on its way."""
    params = tensor_placeholders(graph)
    carried = {}  # node: the labels its outputs carry
    for node in graph.traced.graph.nodes:
        names, k = ([node.name] if node.name in graph.shapes else []), 0
        while f"{node.name}#{k}" in graph.shapes:  # the items of a tuple output
            names.append(f"{node.name}#{k}")
            k += 1
        carried[node.name] = set(np.concatenate([graph.dim_labels(t, d) for t in names
                                                 for d in range(len(graph.shapes[t]))] or
                                                [np.zeros(0, dtype=np.int64)]).tolist())
    out = {}
    for node in graph.traced.graph.nodes:
        if node.name in params or node.name not in graph.shapes:
            continue
        for d in range(len(graph.shapes[node.name])):
            lab = graph.dim_labels(node.name, d)
            mine = set(lab[prunable[lab]].tolist())
            if not mine:
                continue
            readers = {u.name for u in node.users if not mine <= carried.get(u.name, set())}
            if readers:
                out.setdefault(node.name, []).append((d, torch.from_numpy(lab.astype(np.int64)), readers))
    return out


def _gate(v, dims, reader, g):
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        return v
    for d, lab, readers, *centre in dims:
        if reader.name in readers:
            gate = along(g[lab].to(v.dtype), d, v.dim())
            m = centre[0].get(reader.name) if centre else None
            if m is None:
                v = v * gate
            else:
                m = along(m.to(v.dtype), d, v.dim())
                v = m + (v - m) * gate
    return v


def calibration_batches(example: tuple, calibration, labels: bool = False) -> list:
    """The calibration inputs as a list of tuples shaped like the example (the traced graph's
    sizes are fixed); the example alone when none are given. labels: an item may carry more
    after the inputs (labels for a loss_fn); only its first len(example) elements are checked."""
    if calibration is None:
        return [example]
    items = [c if isinstance(c, tuple) else (c,) for c in calibration]
    want = [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(example) if isinstance(t, torch.Tensor)]
    for i, c in enumerate(items):
        c = c[:len(example)] if labels else c
        got = [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(c) if isinstance(t, torch.Tensor)]
        if got != want:
            raise InputError(f"calibration input {i} has shapes {got}; the model was traced with {want}: give "
                             "calibration inputs shaped like the example inputs (split a batch into items)")
    if not items:
        raise InputError("calibration is empty: give at least one input tuple, or leave it out to use the example")
    return items
