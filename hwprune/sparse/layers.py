"""Which layers sparsify can take, keyed by module type: how to read each one's weight as a
matrix (out x in), why it may be ineligible, and the block-sparse module that replaces it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .bsr import BSRConv1x1, BSRLinear


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
