"""Widths a Hugging Face config cannot say: a pruned model's widths differ per layer, so the
cut records in `config.hwprune` each cut tensor's shape and each changed size attribute, by
name (`record_widths`); `hwprune.hf.load_pretrained` gives a model built from that config
those sizes again before its weights load (`resize`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelLoadError
from ..graph.masked import tensors_of

_SIZES = (int, float, bool, tuple, type(None))


def _size_attributes(m: nn.Module) -> dict:
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, _SIZES)
            and (not isinstance(v, tuple) or all(isinstance(e, int) for e in v))}


@dataclass(frozen=True)
class WidthsBefore:
    """What record_widths compares a cut model with: the original's tensor shapes and size
    attributes and its config's earlier record, taken before an in-place cut changes them."""
    shapes: dict
    attributes: dict
    prior: dict


def widths_before(model: nn.Module) -> WidthsBefore:
    config = getattr(model, "config", None)
    return WidthsBefore({k: tuple(t.shape) for k, t in tensors_of(model).items()},
                        {path: _size_attributes(m) for path, m in model.named_modules(remove_duplicate=False)},
                        dict(getattr(config, "hwprune", None) or {}))


def record_widths(original, slim: nn.Module) -> None:
    """Write into slim.config.hwprune what differs from the architecture its config builds:
    the shape of every cut tensor and every changed size attribute, by name. original: the
    module before the cut, or its WidthsBefore (taken before an in-place cut)."""
    if not hasattr(getattr(slim, "config", None), "to_dict"):
        return
    before = original if isinstance(original, WidthsBefore) else widths_before(original)
    new = tensors_of(slim)
    shapes = {k: list(t.shape) for k, t in new.items() if k in before.shapes and before.shapes[k] != tuple(t.shape)}
    attributes = {}
    for path, m in slim.named_modules(remove_duplicate=False):
        a, b = before.attributes.get(path, {}), _size_attributes(m)
        diff = {k: (list(v) if isinstance(v, tuple) else v) for k, v in b.items() if a.get(k) != v}
        if diff:
            attributes[path] = diff
    prior = before.prior
    slim.config.hwprune = {"shapes": (prior.get("shapes") or {}) | shapes,
                           "attributes": _merge(prior.get("attributes") or {}, attributes)}


def _merge(a: dict, b: dict) -> dict:
    return {k: a.get(k, {}) | b.get(k, {}) for k in [*a, *b]}


def resize(model: nn.Module, widths: dict) -> None:
    """Give the tensors and attributes that `record_widths` wrote their saved sizes (the values
    are placeholders until the weights load). A tensor held in several places stays one."""
    shapes, fresh = widths.get("shapes") or {}, {}
    for name, shape in shapes.items():
        owner, _, leaf = name.rpartition(".")
        try:
            mod = model.get_submodule(owner)
        except AttributeError as e:
            raise ModelLoadError(f"the saved widths name {name}, which this model does not have: was it saved "
                                 "from another architecture?") from e
        old = mod._parameters.get(leaf) if leaf in mod._parameters else mod._buffers.get(leaf)
        if old is None:
            raise ModelLoadError(f"the saved widths name {name}, which this model does not have")
        fresh.setdefault(id(old), _empty_like(old, shape))
    for mod in model.modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for k, t in table.items():
                if t is not None and id(t) in fresh:
                    table[k] = fresh[id(t)]
    for path, attrs in (widths.get("attributes") or {}).items():
        mod = model.get_submodule(path)
        for k, v in attrs.items():
            setattr(mod, k, tuple(v) if isinstance(v, list) else v)


def _empty_like(t: torch.Tensor, shape) -> torch.Tensor:
    new = torch.zeros(shape, dtype=t.dtype, device=t.device)
    return nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
