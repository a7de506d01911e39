"""Weight masks: which weights a pattern zeroes, for one layer or across layers at once.

A mask is a bool tensor shaped like the (out x in) weight, True where the weight is kept.
Each pattern is one entry of PATTERNS, found by kind:
- unstructured: the smallest |w|, one weight at a time;
- block:B: the B x B blocks with the smallest L2 norm (the blocks BSR skips);
- 2:4: in every run of 4 consecutive inputs of an output, the 2 smallest |w|.
Scores are computed per unit (weight or block); "global" scope ranks every selected layer's
units together, "layer" scope ranks each layer's alone. Exactly round(sparsity * units) units
are removed per ranking; ties are broken by position, so the count is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InputError
from .ops import BLOCK_SIZES

SCOPES = ("global", "layer")


@dataclass(frozen=True)
class Pattern:
    kind: str  # "unstructured", "block" or "2:4"
    block: int | None = None

    @property
    def name(self) -> str:
        return f"block:{self.block}" if self.kind == "block" else self.kind

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        if text in ("unstructured", "2:4"):
            return cls(text)
        kind, _, size = text.partition(":")
        if kind == "block" and size.isdigit() and int(size) in BLOCK_SIZES:
            return cls("block", int(size))
        sizes = "|".join(map(str, BLOCK_SIZES))
        raise InputError(f"pattern {text!r} is unknown: choose unstructured, block:{sizes} or 2:4")


@dataclass(frozen=True)
class PatternRule:
    """How a pattern scores a weight and turns unit decisions back into a weight mask."""
    fits: Callable[[torch.Size, Pattern], str | None]      # None, or why this weight cannot take it
    scores: Callable[[torch.Tensor, Pattern], torch.Tensor]  # one score per unit, flat
    expand: Callable[[torch.Tensor, torch.Size, Pattern], torch.Tensor]  # unit keep -> weight mask


def _block_fits(shape, p):
    bad = [f"{name} {n}" for name, n in zip(("out", "in"), shape) if n % p.block]
    if not bad:
        return None
    return f"{' and '.join(bad)} not {'a multiple' if len(bad) == 1 else 'multiples'} of block {p.block}"


def _block_scores(w, p):
    out_f, in_f = w.shape
    b = p.block
    return w.reshape(out_f // b, b, in_f // b, b).float().pow(2).sum(dim=(1, 3)).sqrt().flatten()


def _block_expand(keep, shape, p):
    b = p.block
    grid = keep.view(shape[0] // b, shape[1] // b)
    return grid.repeat_interleave(b, 0).repeat_interleave(b, 1)


def _two_four_fits(shape, p):
    return None if shape[1] % 4 == 0 else f"in {shape[1]} not a multiple of 4"


PATTERNS: dict[str, PatternRule] = {
    "unstructured": PatternRule(fits=lambda shape, p: None, scores=lambda w, p: w.detach().abs().float().flatten(),
                                expand=lambda keep, shape, p: keep.view(shape)),
    "block": PatternRule(fits=_block_fits, scores=lambda w, p: _block_scores(w.detach(), p), expand=_block_expand),
}


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive inputs (ties: the earlier input)."""
    groups = weight.detach().abs().float().reshape(weight.shape[0], -1, 4)
    top = groups.topk(2, dim=-1, sorted=False).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.view(weight.shape)


def fits(shape: torch.Size, pattern: Pattern) -> str | None:
    """None if a weight of `shape` can take `pattern`, else the reason it cannot."""
    if pattern.kind == "2:4":
        return _two_four_fits(shape, pattern)
    return PATTERNS[pattern.kind].fits(shape, pattern)


def _drop_smallest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """keep flags with exactly round(sparsity * n) of the smallest scores dropped."""
    n = scores.numel()
    drop = round(sparsity * n)
    keep = torch.ones(n, dtype=torch.bool)
    if drop:
        order = torch.sort(scores.cpu(), stable=True).indices
        keep[order[:drop]] = False
    return keep


def compute_masks(weights: dict, pattern: Pattern, sparsity: float, scope: str) -> dict:
    """{name: mask} for {name: (out x in) weight}; 2:4 is 50% by construction."""
    if pattern.kind == "2:4":
        return {name: two_four_mask(w) for name, w in weights.items()}
    rule = PATTERNS[pattern.kind]
    scores = {name: rule.scores(w, pattern) for name, w in weights.items()}
    if scope == "layer":
        keeps = {name: _drop_smallest(s, sparsity) for name, s in scores.items()}
    else:
        flat = _drop_smallest(torch.cat([s.cpu() for s in scores.values()]), sparsity)
        keeps = dict(zip(scores, flat.split([s.numel() for s in scores.values()])))
    return {name: rule.expand(keeps[name], weights[name].shape, pattern).to(weights[name].device)
            for name in weights}
