"""The loss that taylor differentiates and loss_change differences, on the traced graph with
the channels already cut masked (mask equivalence), so that both measure the same model.

- The user's: loss_fn(model, batch) -> scalar tensor. `model` stands for the model (called
  like it, attributes read from it) and runs its traced graph; `batch` is a calibration item,
  which may carry labels after the inputs.
- With a teacher: distillation, the mean squared difference of every floating output from the
  teacher's (logit matching). At the teacher itself it is zero with zero gradient, so give a
  teacher only when the model scored differs from it (a fine-tuned slim model).
- Otherwise, label-free: self-labelled cross-entropy, -log softmax(z)[argmax z'] over the last
  dim of every floating output with two or more entries, where z' are the outputs of the model
  being scored (before any leave-one-out removal). It is the negative log-likelihood of the
  model's own prediction: its gradient is non-zero wherever the softmax is not one-hot, and it
  rises when a channel that supports the prediction goes. Meant for classifiers; for other
  outputs give loss_fn.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..graph.masked import removal_masks, run_masked


def floating(outs) -> list:
    return [o for o in torch.utils._pytree.tree_leaves(outs) if isinstance(o, torch.Tensor) and o.is_floating_point()]


def self_label_loss(outputs: list, labels: list) -> torch.Tensor:
    """Cross-entropy of each logit output against fixed labels (its argmax at the scored model)."""
    return sum(F.cross_entropy(o.reshape(-1, o.shape[-1]).float(), y) for o, y in zip(outputs, labels))


def distillation_loss(outputs: list, targets: list) -> torch.Tensor:
    if [o.shape for o in outputs] != [t.shape for t in targets]:
        raise InputError(f"the teacher's outputs {[tuple(t.shape) for t in targets]} differ in shape from the "
                         f"model's {[tuple(o.shape) for o in outputs]}: give the original model as the teacher")
    return sum(F.mse_loss(o.float(), t.float()) for o, t in zip(outputs, targets))


class GraphModel:
    """A stand-in for the model in a user's loss_fn: called like it, it runs the traced graph
    with `masks` applied and returns outputs structured as the model's (`spec`)."""

    def __init__(self, graph, model, masks: dict, spec):
        self._graph, self._model, self._masks, self._spec = graph, model, masks, spec

    def __call__(self, *inputs, **kwargs):
        if kwargs:
            raise InputError(f"loss_fn called the model with keyword arguments {sorted(kwargs)}: the traced graph "
                             "takes the example inputs' positional arguments; call model(*inputs)")
        outs = run_masked(self._graph, self._model, inputs, self._masks)
        return self._spec(outs)

    def __getattr__(self, name):
        return getattr(self._model, name)


def _output_spec(model, inputs: tuple):
    """A function from the graph's flat tensor outputs to the structure model(*inputs) returns."""
    with torch.no_grad():
        leaves, spec = torch.utils._pytree.tree_flatten(model(*inputs))
    where = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]

    def rebuild(outs: list):
        if len(outs) != len(where):
            return outs[0] if len(outs) == 1 else tuple(outs)
        filled = list(leaves)
        for i, o in zip(where, outs):
            filled[i] = o
        return torch.utils._pytree.tree_unflatten(filled, spec)
    return rebuild


def input_part(graph, item: tuple) -> tuple:
    """The leading elements of a calibration item that are the model's inputs (labels may follow)."""
    n = sum(1 for k, _ in graph.traced.placeholders.values() if k == "input")
    taken, out = 0, []
    for v in item:
        if taken >= n:
            break
        out.append(v)
        taken += len(torch.utils._pytree.tree_leaves(v))
    return tuple(out)


class GraphLoss:
    """The loss of one criterion run: loss(i, masks) on calibration item i, the graph run with
    `masks` (hwprune.graph.masked.removal_masks) on top of the channels already cut."""

    def __init__(self, ctx):
        self.ctx, self.graph, self.model = ctx, ctx.graph, ctx.model
        self.removed = ctx.removed if ctx.removed is not None else np.zeros(int(ctx.graph.labels.max()) + 1, bool)
        self.base_masks = removal_masks(self.graph, self.removed)
        self._targets: dict = {}
        self._spec = _output_spec(self.model, input_part(self.graph, ctx.calibration[0])) if ctx.loss_fn else None

    def masks(self, also=None) -> dict:
        """Masks for the channels already cut, and those of the label indices `also`."""
        if also is None:
            return self.base_masks
        removed = self.removed.copy()
        removed[also] = True
        return removal_masks(self.graph, removed)

    def __call__(self, i: int, masks: dict) -> torch.Tensor:
        item = self.ctx.calibration[i]
        if self.ctx.loss_fn is not None:
            value = self.ctx.loss_fn(GraphModel(self.graph, self.model, masks, self._spec), item)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ""
                raise InputError(f"loss_fn returned {type(value).__name__}{shape}: return a scalar tensor")
            return value.reshape(())
        outs = floating(run_masked(self.graph, self.model, item, masks))
        if self.ctx.teacher is not None:
            return distillation_loss(outs, self._target(i, item))
        logits = [o for o in outs if o.dim() >= 1 and o.shape[-1] >= 2]
        if not logits:
            raise InputError(f"the default loss needs an output of logits (two or more values in its last dim); "
                             f"the model's floating outputs are {[tuple(o.shape) for o in outs]}: "
                             "give loss_fn(model, batch)")
        return self_label_loss(logits, self._target(i, item))

    def _target(self, i: int, item: tuple) -> list:
        """The teacher's outputs, or the scored model's own predictions, on item i (measured once)."""
        if i not in self._targets:
            with torch.no_grad():
                if self.ctx.teacher is not None:
                    self._targets[i] = [t.detach() for t in floating(self.ctx.teacher(*input_part(self.graph, item)))]
                else:
                    outs = floating(run_masked(self.graph, self.model, item, self.base_masks))
                    self._targets[i] = [o.reshape(-1, o.shape[-1]).argmax(-1) for o in outs
                                        if o.dim() >= 1 and o.shape[-1] >= 2]
        return self._targets[i]


@contextlib.contextmanager
def gradients_on(tensors: list):
    """requires_grad on every tensor while inside, then as it was (a user may have frozen some)."""
    before = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(True)
        yield
    finally:
        for t, b in zip(tensors, before):
            t.requires_grad_(b)
