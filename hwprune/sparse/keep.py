"""Keeping a sparse model sparse while it trains.

sparsify marks every layer it zeroed in place (unstructured and 2:4 patterns keep the dense
nn.Linear / nn.Conv2d with zeros) with the attribute MARK, the pattern's name; the mark is
pickled with the module, so a model written by `hwprune sparsify` and read back by
`hwprune finetune` still carries it. An optimizer step moves zeros like any weight (AdamW's
update of a zero weight is -lr * m / sqrt(v), not 0), so `ZerosKept` multiplies each marked
weight by its mask again after every step: the kept pattern is the one sparsify proved.
Block-sparse layers (BSRLinear) need no mask: they store only their kept blocks, and the
blocks they do not store cannot be trained.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

MARK = "hwprune_pattern"


def mark(module: nn.Module, pattern: str) -> None:
    """Say that `module`'s weight zeros are a pattern's (kept by ZerosKept when it trains)."""
    setattr(module, MARK, pattern)


@dataclass(frozen=True)
class ZerosKept:
    """The masks (weight != 0 when training starts) of every marked layer of a model."""
    masks: tuple  # ((name, parameter, mask), ...)
    patterns: dict  # pattern name -> number of layers

    @classmethod
    def of(cls, model: nn.Module) -> "ZerosKept":
        masks = tuple((name, m.weight, m.weight.detach().ne(0)) for name, m in model.named_modules()
                      if isinstance(getattr(m, MARK, None), str) and isinstance(getattr(m, "weight", None),
                                                                                 nn.Parameter))
        counts = Counter(getattr(model.get_submodule(name), MARK) for name, _, _ in masks)
        return cls(masks, dict(sorted(counts.items())))

    def apply(self) -> None:
        """Zero again what the last optimizer step moved off zero."""
        with torch.no_grad():
            for _, weight, mask in self.masks:
                weight.mul_(mask.to(weight.dtype))

    def to_json(self) -> dict:
        return {"layers": len(self.masks), "patterns": self.patterns,
                "zeros": sum(int(mask.numel() - mask.sum()) for _, _, mask in self.masks)}
