"""Which layers sparsify can take, keyed by module type: how to read each one's weight as a
matrix (out x in), why it may be ineligible, and the block-sparse module that replaces it;
selecting them by --layers, and the kernel that runs each."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from . import ops
from .bsr import BSRConv1x1, BSRLinear
from .masks import Pattern, fits


@dataclass(frozen=True)
class LayerKind:
    why_not: Callable[[nn.Module], str | None]       # None where the layer can be sparsified
    weight: Callable[[nn.Module], "object"]           # the (out x in) view of its weight
    to_bsr: Callable[[nn.Module, int], nn.Module]     # the BSR module with the same product


def _conv_why_not(conv: nn.Conv2d) -> str | None:
    if conv.kernel_size != (1, 1):
        return f"a {conv.kernel_size[0]}x{conv.kernel_size[1]} conv (only 1x1 convs are matrix products)"
    if conv.groups != 1:
        return f"a grouped conv (groups={conv.groups})"
    if conv.padding not in ((0, 0), "valid"):
        return f"a padded 1x1 conv (padding={conv.padding})"
    return None


LAYER_KINDS: dict[type, LayerKind] = {
    nn.Linear: LayerKind(why_not=lambda m: None, weight=lambda m: m.weight,
                         to_bsr=BSRLinear.from_linear),
    nn.Conv2d: LayerKind(why_not=_conv_why_not, weight=lambda m: m.weight.flatten(1),
                         to_bsr=BSRConv1x1.from_conv),
}


def kind_of(module: nn.Module) -> LayerKind | None:
    """The registered kind of this module's exact type (a subclass may change forward)."""
    return LAYER_KINDS.get(type(module))


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


def kernel_name(pattern: Pattern, weight: torch.Tensor) -> str:
    """The kernel that runs a layer of `pattern` with this weight's device and dtype."""
    if pattern.kind == "block":
        name = ops.kernel_for(weight.device, weight.dtype)
        return {"native": "hwprune::bsr_linear, native CPU kernel", "triton": "hwprune::bsr_linear, Triton",
                "reference": "hwprune::bsr_linear, PyTorch reference (native kernel not built)"}[name]
    if pattern.kind == "2:4":
        return ("dense with zeros here; torch semi-structured sparse (to_semi_structured) on sm80+ GPUs, "
                "TensorRT sparse weights")
    return "dense F.linear/conv with zeros"


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in `model` at the dotted module name."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The (out x in) weight a layer multiplies by: a BSR layer's blocks as a dense matrix."""
    if hasattr(module, "dense_weight"):
        return module.dense_weight()
    return kind_of(module).weight(module).detach()
