"""The oracle itself on right and wrong cuts: `hwprune.verify.verify` must pass the cut that the
channel graph prescribes and reject each deliberately wrong one, saying why.

Every row takes a tiny model, removes some channels of one group, and slices the model's tensors
by `graph.param_kept(removed)` (the right cut), or by that cut with one deliberate mistake: a
wrong index map, one side of an add cut differently, a bias sliced wrongly or not at all, heads
in another order. The row's oracle is shown to pass on the right cut (the "right" rows) and to
fail on the wrong one, with the message a user would see.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shared_models import sliced
from torch import nn

import hwprune
from hwprune.errors import VerificationError
from hwprune.verify import verify

NOT_EQUIVALENT = "not mask-equivalent to the original: max relative error"
FAILS_TO_RUN = "the slim model fails to run"
SHAPES_DIFFER = "differ in shape from the original's"


class ConvPair(nn.Module):
    """conv -> BN -> ReLU -> conv: one group of 8 channels, with a bias and a norm on the way."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)
        with torch.no_grad():  # statistics away from (0, 1), so that a wrong slice of them shows
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.b(F.relu(self.bn(self.a(x))))


class Residual(nn.Module):
    """Two branches added: their output channels are one group with the reader's input."""

    def __init__(self):
        super().__init__()
        self.left, self.right, self.out = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(F.relu(self.left(x) + self.right(x)))


class Heads(nn.Module):
    """Multi-head attention as transformers write it: 4 heads of 4 channels each."""

    def __init__(self, d=16, head_dim=4):
        super().__init__()
        self.head_dim = head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, -1, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


def _reversed(kept: dict, fqn: str, dim: int) -> dict:
    """The tensor reads the kept channels in reverse order: the index map is permuted."""
    return _with(kept, fqn, dim, kept[fqn][dim][::-1].copy())


def _shifted(kept: dict, fqn: str, dim: int, n: int) -> dict:
    """The tensor keeps the channels one past the kept ones: the index map is off by one."""
    return _with(kept, fqn, dim, (kept[fqn][dim] + 1) % n)


def _first(kept: dict, fqn: str, dim: int) -> dict:
    """The tensor keeps its first channels, as a cut that did not know it was coupled would."""
    return _with(kept, fqn, dim, np.arange(len(kept[fqn][dim])))


def _dropped(kept: dict, fqn: str) -> dict:
    """The tensor is not sliced at all."""
    return {k: v for k, v in kept.items() if k != fqn}


def _heads_swapped(kept: dict, fqns: tuple, dim: int, head_dim: int) -> dict:
    """These tensors take the kept heads with the first two swapped (each head a block of channels)."""
    for fqn in fqns:
        blocks = kept[fqn][dim].reshape(-1, head_dim)
        kept = _with(kept, fqn, dim, blocks[[1, 0, *range(2, len(blocks))]].reshape(-1))
    return kept


def _with(kept: dict, fqn: str, dim: int, idx) -> dict:
    out = {k: dict(v) for k, v in kept.items()}
    out.setdefault(fqn, {})[dim] = np.asarray(idx)
    return out


@dataclass(frozen=True)
class Cut:
    name: str
    build: Callable
    shape: tuple
    member: str  # a member of the group to cut ("fqn:dim")
    remove: tuple  # positions in that group
    wrong: Callable | None = None  # kept -> the same cut with one mistake; None: the right cut
    message: str = ""  # what verify must say about the wrong cut


CUTS = [
    Cut("right: conv pair", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5)),
    Cut("index map permuted in the reader", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _reversed(k, "b.weight", 1), NOT_EQUIVALENT),
    Cut("index map off by one in the producer", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _shifted(_shifted(k, "a.weight", 0, 8), "a.bias", 0, 8), NOT_EQUIVALENT),
    Cut("bias sliced as the first channels", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _first(k, "a.bias", 0), NOT_EQUIVALENT),
    Cut("bias not sliced", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _dropped(k, "a.bias"), FAILS_TO_RUN),
    Cut("norm's running mean sliced as the first channels", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _first(k, "bn.running_mean", 0), NOT_EQUIVALENT),
    Cut("right: residual add", Residual, (2, 3, 6, 6), "left.weight:0", (0, 3, 6)),
    Cut("one side of the add cut elsewhere", Residual, (2, 3, 6, 6), "left.weight:0", (0, 3, 6),
        lambda k: _first(_first(k, "right.weight", 0), "right.bias", 0), NOT_EQUIVALENT),
    Cut("one side of the add not cut", Residual, (2, 3, 6, 6), "left.weight:0", (0, 3, 6),
        lambda k: _dropped(_dropped(k, "right.weight"), "right.bias"), FAILS_TO_RUN),
    Cut("right: attention heads", Heads, (1, 5, 16), "q.weight:0", (1,)),
    Cut("output projection reads the heads transposed", Heads, (1, 5, 16), "q.weight:0", (1,),
        lambda k: _heads_swapped(k, ("o.weight",), 1, 4), NOT_EQUIVALENT),
    Cut("query heads transposed against the keys", Heads, (1, 5, 16), "q.weight:0", (1,),
        lambda k: _heads_swapped(k, ("q.weight", "q.bias"), 0, 4), NOT_EQUIVALENT),
    Cut("values' heads transposed", Heads, (1, 5, 16), "q.weight:0", (1,),
        lambda k: _heads_swapped(k, ("v.weight", "v.bias"), 0, 4), NOT_EQUIVALENT),
    Cut("a model output cut", ConvPair, (2, 3, 6, 6), "a.weight:0", (1, 5),
        lambda k: _with(_with(k, "b.weight", 0, [0, 1, 2]), "b.bias", 0, [0, 1, 2]), SHAPES_DIFFER),
]


@pytest.mark.parametrize("case", CUTS, ids=[c.name for c in CUTS])
def test_verify_passes_the_right_cut_and_rejects_the_wrong_one(case: Cut):
    torch.manual_seed(0)
    model = case.build().eval()
    x = (torch.randn(case.shape),)
    graph = hwprune.analyze(model, x).graph
    [group] = [g for g in graph.groups if case.member in g.members]
    assert group.frozen is None, group.frozen
    removed = graph.removed_of({group.id: list(case.remove)})
    kept = graph.param_kept(removed)
    if case.wrong is None:
        result = verify(graph, model, sliced(model, kept), x, removed)
        assert result["passed"] and result["max_rel_err"] <= 1e-5, result
        return
    wrong = case.wrong(kept)
    assert _differs(wrong, kept), "the mistake left the cut as it was"
    with pytest.raises(VerificationError) as e:
        verify(graph, model, sliced(model, wrong), x, removed)
    assert case.message in str(e.value)


def _differs(a: dict, b: dict) -> bool:
    return a.keys() != b.keys() or any(a[k].keys() != b[k].keys() or any(
        not np.array_equal(a[k][d], b[k][d]) for d in a[k]) for k in a)


def test_every_wrong_cut_has_a_right_one_beside_it():
    """A wrong row proves something only where the same cut, done right, passes."""
    right = {(c.build, c.member, c.remove) for c in CUTS if c.wrong is None}
    alone = [c.name for c in CUTS if c.wrong is not None and (c.build, c.member, c.remove) not in right]
    assert not alone, f"wrong cuts without a right row: {alone}"
