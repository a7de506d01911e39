"""Physical surgery: slice parameters and buffers, then let each module's cutter fix its own
size attributes. Cutters are a registry keyed by module type (found along the MRO)."""
from __future__ import annotations

import copy
import sys

import numpy as np
import torch
from torch import nn

from .registry import CUTTERS, ModuleCut, register_cutter
from .widths import record_widths, widths_before

__all__ = ["CUTTERS", "ModuleCut", "cut", "cutter_for", "data_buffers", "has_cutter", "keeps_sizes",
           "register_cutter", "slice_in_place", "sliced", "sliced_tensors", "tensor_at"]


def cutter_for(module: nn.Module):
    """The cutter of the module's type or its nearest registered base; None if there is none."""
    from . import attention, cutters  # noqa: F401  (registers the built-in cutters)
    if "transformers" in sys.modules:  # a model of transformers' layers: register their cutters
        from . import hf_modules  # noqa: F401
    if "torchvision" in sys.modules:
        from . import torchvision_attention  # noqa: F401
    if "timm" in sys.modules:
        from . import timm_attention, timm_modules  # noqa: F401
    if "ultralytics" in sys.modules:
        from . import ultralytics_modules  # noqa: F401
    for t in type(module).__mro__:
        for key in (t, f"{t.__module__}.{t.__qualname__}"):  # a type, or its qualified name
            if key in CUTTERS:
                return CUTTERS[key]
    return None


def has_cutter(module: nn.Module) -> bool:
    """Whether the module's size attributes are right after its tensors are cut: some cutter fixes
    them, or it keeps none (a layer scale's gamma held by a ConvNeXt block, a class token)."""
    return cutter_for(module) is not None or not keeps_sizes(module)


def data_buffers(module: nn.Module) -> tuple:
    """Names of the module's buffers that are data, not channels (a table of coordinates that feeds
    an MLP): its cutter's `data_buffers`. They stay whole."""
    return tuple(getattr(cutter_for(module), "data_buffers", ()))


def keeps_sizes(module: nn.Module) -> bool:
    """Whether an attribute of the module holds a size of one of its own tensors' dims: an int, or
    ints in a tuple or list (normalized_shape). Sizes of 1 are broadcasts, not widths."""
    own = [t for t in [*module._parameters.values(), *module._buffers.values()] if t is not None]
    sizes = {s for t in own for s in t.shape if s > 1}
    for value in vars(module).values():
        ints = value if isinstance(value, (tuple, list)) else (value,)
        if any(type(v) is int and v in sizes for v in ints):
            return True
    return False


def tensor_at(model: nn.Module, fqn: str) -> torch.Tensor:
    """The parameter or buffer of `model` under this state-dict name."""
    owner, _, name = fqn.rpartition(".")
    mod = model.get_submodule(owner) if owner else model
    t = mod._parameters.get(name)
    return t if t is not None else mod._buffers[name]


def sliced(old: torch.Tensor, dims: dict) -> torch.Tensor:
    """A fresh tensor of `old` kept at `dims` ({dim: indices}); a Parameter where old is one.
    index_select copies, so only a tensor with nothing to cut is cloned."""
    new = old.detach()
    for d, idx in sorted(dims.items()):
        new = new.index_select(int(d), torch.as_tensor(np.asarray(idx), dtype=torch.long))
    if not dims:
        new = new.clone()
    return nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new


def sliced_tensors(model: nn.Module, kept: dict) -> dict:
    """{id(tensor): its slice} for each tensor in `kept` ({fqn: {dim: indices}}): a fresh
    tensor, a Parameter where the original is one."""
    return {id(old): sliced(old, dims) for old, dims in ((tensor_at(model, fqn), dims) for fqn, dims in kept.items())}


def _holders(model: nn.Module, tensors: set) -> set:
    """ids of the modules that hold any of the tensors (by id)."""
    return {id(mod) for mod in model.modules(remove_duplicate=False)
            if any(id(t) in tensors for t in [*mod._parameters.values(), *mod._buffers.values()])}


def slice_in_place(model: nn.Module, kept: dict) -> set:
    """Replace each tensor in `kept` by its slice where the model holds it, one tensor at a time,
    so that the old one is freed before the next slice is made: the cut then needs the model's
    memory and one tensor more, not a second model. A tensor held in several places (tied
    weights) becomes one slice held in all of them. Returns the ids of the modules changed."""
    places: dict = {}
    for mod in model.modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for k, t in table.items():
                if t is not None:
                    places.setdefault(id(t), []).append((mod, table, k))
    changed = set()
    for fqn, dims in kept.items():
        old = tensor_at(model, fqn)
        if all(len(idx) == old.shape[int(d)] for d, idx in dims.items()):
            continue  # nothing of it is cut: kept as it is, not copied
        held = places.pop(id(old), None)
        if held is None:  # cut already under another name of the same tensor
            continue
        new = sliced(old, dims)
        del old
        for mod, table, k in held:
            table[k] = new
            changed.add(id(mod))
        del held
    return changed


def _above_changed(model: nn.Module, changed: set) -> set:
    """Paths of the modules that hold, below them, a module whose tensors were cut."""
    out = set()
    for path, mod in model.named_modules():
        if id(mod) in changed:
            parts = path.split(".") if path else []
            out.update(".".join(parts[:i]) for i in range(len(parts)))
    return out


def cut(model: nn.Module, kept: dict, calls: dict, graph_shapes=None, heads: dict | None = None,
        sizes: dict | None = None, *, in_place: bool = False) -> nn.Module:
    """A deep copy of `model` with `kept` applied and every affected module's attributes fixed
    (in_place: `model` itself, its tensors replaced one at a time: slice_in_place).
    calls: {module path: (old input shape, new input shape)} of its first call in the graph.
    graph_shapes: (old, new) shape functions when the model is its own exported graph (a .pt2),
    whose size arguments are rewritten instead. heads: {module path: HeadCut} (graph.heads).
    sizes: {module path: {old size: {new sizes}}} (owned_sizes.owned_sizes): the int attributes of
    modules without a cutter follow them (owned_sizes.follow_owned_sizes)."""
    if in_place:
        before = widths_before(model)
        changed = slice_in_place(model, kept)
        slim = model
    else:
        before = model
        cuts = sliced_tensors(model, kept)
        # the copy takes each cut tensor's slice in place of copying the whole tensor; a tensor held
        # in several places (tied weights, shared modules) is one memo entry, so it stays one tensor
        slim = copy.deepcopy(model, memo=dict(cuts))
        changed = _holders(slim, {id(t) for t in cuts.values()})
    if graph_shapes is not None:
        from .graph_args import fix_graph_args
        fix_graph_args(slim, *graph_shapes)
        return slim
    heads = heads or {}
    above = _above_changed(slim, changed)
    for path, mod in slim.named_modules():
        old_in, new_in = calls.get(path, (None, None))
        head = heads.get(path)
        head = head if head is not None and head.heads[0] != head.heads[1] else None
        fn = cutter_for(mod)
        if (id(mod) not in changed and old_in == new_in and head is None
                and not (path in above and getattr(fn, "after_children", False))):
            continue
        if fn is None and head is not None:
            from .attention import head_attributes
            fn = head_attributes
        if fn is not None:
            fn(mod, ModuleCut(path, old_in, new_in, head))
    if sizes:
        from .owned_sizes import follow_owned_sizes
        for path, mod in slim.named_modules():
            if path in sizes and cutter_for(mod) is None and path not in heads:
                follow_owned_sizes(mod, sizes[path])
    record_widths(before, slim)  # a Hugging Face model's config learns its per-layer widths
    return slim
