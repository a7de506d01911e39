"""Masks per pattern: the exact sparsity asked for, the structure each pattern promises, and
the choice of the smallest weights or blocks."""
from __future__ import annotations

import pytest
import torch

from hwprune.errors import InputError
from hwprune.sparse.masks import Pattern, compute_masks, fits


def _weights(seed=0, shapes=((64, 96), (128, 64))):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}": torch.randn(*s, generator=g) * (i + 1) for i, s in enumerate(shapes)}


def _units(mask, pattern):
    """Kept units: weights, or B x B blocks (each block must be all kept or all dropped)."""
    if pattern.kind != "block":
        return mask.flatten()
    b = pattern.block
    grid = mask.reshape(mask.shape[0] // b, b, mask.shape[1] // b, b).permute(0, 2, 1, 3).flatten(2)
    assert (grid.all(-1) | ~grid.any(-1)).all(), "a block is partly kept"
    return grid[..., 0].flatten()


@pytest.mark.parametrize("pattern", ["unstructured", "block:16", "block:32"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.93])
def test_exact_sparsity_and_structure(pattern, scope, sparsity):
    p = Pattern.parse(pattern)
    weights = _weights()
    masks = compute_masks(weights, p, sparsity, scope)
    units = {n: _units(m, p) for n, m in masks.items()}
    if scope == "layer":
        for n, u in units.items():
            assert int((~u).sum()) == round(sparsity * u.numel())
    else:
        total = sum(u.numel() for u in units.values())
        assert sum(int((~u).sum()) for u in units.values()) == round(sparsity * total)


@pytest.mark.parametrize("pattern", ["unstructured", "block:16"])
def test_the_dropped_units_are_the_smallest(pattern):
    p = Pattern.parse(pattern)
    weights = _weights(seed=1)
    masks = compute_masks(weights, p, 0.6, "global")
    kept, dropped = [], []
    for name, w in weights.items():
        if p.kind == "block":
            b = p.block
            score = w.reshape(w.shape[0] // b, b, w.shape[1] // b, b).pow(2).sum((1, 3)).sqrt().flatten()
        else:
            score = w.abs().flatten()
        keep = _units(masks[name], p)
        kept.append(score[keep])
        dropped.append(score[~keep])
    assert torch.cat(dropped).max() <= torch.cat(kept).min()


def test_global_scope_takes_more_from_the_smaller_layer():
    weights = _weights()  # l1 is twice the scale of l0
    masks = compute_masks(weights, Pattern("unstructured"), 0.5, "global")
    assert (~masks["l0"]).float().mean() > (~masks["l1"]).float().mean()


def test_two_four_keeps_the_two_largest_of_every_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -1.0, 0.0]])
    mask = compute_masks({"w": w}, Pattern.parse("2:4"), 0.5, "global")["w"][0]
    assert mask[:4].tolist() == [False, True, True, False]
    assert int(mask[4:7].sum()) == 2 and not mask[7]  # a tie among |1|s, but never the 0
    big = _weights()["l1"]
    keep = compute_masks({"w": big}, Pattern.parse("2:4"), 0.5, "global")["w"].reshape(big.shape[0], -1, 4)
    groups = big.abs().reshape(big.shape[0], -1, 4)
    assert (keep.sum(-1) == 2).all()
    assert (groups.masked_fill(keep, -1).amax(-1) <= groups.masked_fill(~keep, float("inf")).amin(-1)).all()


@pytest.mark.parametrize("text, message", [
    ("block:8", "pattern 'block:8' is unknown: choose unstructured, block:16|32|64 or 2:4"),
    ("blocks", "pattern 'blocks' is unknown"),
    ("1:4", "pattern '1:4' is unknown"),
])
def test_unknown_patterns_are_refused(text, message):
    with pytest.raises(InputError, match=message.replace("|", r"\|")):
        Pattern.parse(text)


@pytest.mark.parametrize("shape, pattern, why", [
    ((64, 96), "block:32", None),
    ((1000, 512), "block:16", "out 1000 not a multiple of block 16"),
    ((64, 30), "2:4", "in 30 not a multiple of 4"),
    ((10, 30), "unstructured", None),
])
def test_fits(shape, pattern, why):
    assert fits(torch.Size(shape), Pattern.parse(pattern)) == why
