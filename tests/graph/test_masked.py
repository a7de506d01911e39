"""The oracle's masking (hwprune.graph.masked.zero_removed) is bit for bit the masking it replaced.

zero_removed zeroes removed elements with one AND in the tensor's integer view (bit_masked);
the reference is fill_removed, the clone + index_fill_ / broadcast `where` it used before. Rows
are tensors (dtypes, layouts, NaN/inf/-0.0, several masked dims) and small models (conv, BN,
residual, attention heads, views, depthwise, half precision): the masked reference outputs of
the oracle must be identical with either, and a wrong cut must still be rejected.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from shared_models import MLP, sliced
from torch import nn

import hwprune
from hwprune.errors import VerificationError
from hwprune.graph import masked
from hwprune.verify import expected_outputs, verify


def _masks(shape: tuple, dims: tuple, seed: int) -> list:
    """[(dim, removed indices, keep vector)] as removal_masks makes them: about half of each dim removed."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for d in dims:
        keep = torch.rand(shape[d], generator=g) > 0.5
        keep[0] = True
        out.append((d, torch.nonzero(~keep).flatten(), keep))
    return out


def _specials(x: torch.Tensor) -> torch.Tensor:
    """Put NaN, +-inf and -0.0 in x (where it is floating): their bits must survive where kept."""
    if x.is_floating_point() and x.numel() >= 8:
        flat = x.view(-1) if x.is_contiguous() else None
        if flat is not None:
            flat[:4] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0], dtype=x.dtype)
    return x


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(masked.SAME_WIDTH_INT[t.dtype]) if t.dtype in masked.SAME_WIDTH_INT else t


@dataclass(frozen=True)
class TensorCase:
    name: str
    make: Callable  # () -> tensor
    dims: tuple  # the dims that carry removed elements


def _randn(*shape, dtype=torch.float32):
    return lambda: _specials(torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(dtype))


TENSORS = [
    TensorCase("NCHW channels fp32", _randn(2, 16, 5, 5), (1,)),
    TensorCase("innermost features fp32", _randn(1, 7, 48), (2,)),
    TensorCase("heads and head dim", _randn(1, 4, 6, 8), (1, 3)),
    TensorCase("batch-like first dim", _randn(12, 6, 8), (0,)),
    TensorCase("float64", _randn(3, 10, 4, dtype=torch.float64), (1,)),
    TensorCase("float16", _randn(2, 24, 3, dtype=torch.float16), (1, 2)),
    TensorCase("bfloat16", _randn(2, 9, 32, dtype=torch.bfloat16), (2,)),
    TensorCase("int64 indices", lambda: torch.arange(60).view(3, 20), (1,)),
    TensorCase("transposed (non-contiguous)", lambda: _randn(1, 8, 6, 16)().transpose(1, 2), (1, 2)),
    TensorCase("sliced (strided)", lambda: _randn(4, 32, 6)()[:, ::2], (1,)),
    TensorCase("expanded (stride 0)", lambda: _randn(1, 1, 12)().expand(3, 5, 12), (2,)),
    TensorCase("bool (falls back to filling)", lambda: torch.rand(3, 10, generator=torch.Generator().manual_seed(2)) > 0.3, (1,)),
]


@pytest.mark.parametrize("case", TENSORS, ids=[c.name for c in TENSORS])
def test_zero_removed_is_the_filled_copy_bit_for_bit(case: TensorCase):
    x = case.make()
    before = x.clone()
    m = _masks(tuple(x.shape), case.dims, seed=len(case.name))
    got, want = masked.zero_removed(x, m), masked.fill_removed(x, m)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(_bits(got), _bits(want)), "a kept element changed bits or a removed one is not +0.0"
    assert torch.equal(_bits(x), _bits(before)), "the input was written"
    assert got.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), "the copy aliases the input"
    for d, gone, _ in m:  # the oracle: what was removed reads zero
        assert not _bits(got.index_select(d, gone)).any()
    assert got.stride() == x.clone().stride(), "laid out otherwise than a clone of the input"


def test_zero_removed_keeps_the_gradient_where_one_is_taken():
    """Taylor and loss_change mask under autograd: bits have no gradient, so the fill path runs."""
    x = torch.randn(2, 8, 3, requires_grad=True)
    m = _masks((2, 8, 3), (1,), seed=3)
    masked.zero_removed(x, m).sum().backward()
    keep = m[0][2].to(x.dtype).view(1, -1, 1).expand_as(x)
    assert torch.equal(x.grad, keep)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 1)
        self.dw, self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.b(F.relu(self.bn(self.a(x))))
        return self.c(F.relu(self.dw(y)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b, self.head = (nn.Conv2d(3, 16, 1), nn.Conv2d(16, 24, 3, padding=1),
                                                nn.Conv2d(24, 16, 1), nn.Linear(16, 5))

    def forward(self, x):
        s = F.relu(self.stem(x))
        s = F.relu(s + self.b(F.relu(self.a(s))))
        return self.head(s.mean((2, 3)))


class Attention(nn.Module):
    """Heads by view/transpose, an MLP after them, and a flatten view at the end."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down, self.norm = nn.Linear(d, 64), nn.Linear(64, d), nn.LayerNorm(d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = self.norm(x + self.o(y))
        return (x + self.down(F.gelu(self.up(x)))).flatten(1)


def _half_mlp():
    return MLP().to(torch.bfloat16)


@dataclass(frozen=True)
class ModelCase:
    name: str
    build: Callable
    shape: tuple
    dtype: torch.dtype = torch.float32


MODELS = [
    ModelCase("conv, BN, depthwise", ConvBN, (2, 3, 8, 8)),
    ModelCase("residual add and pooled linear", Residual, (1, 3, 8, 8)),
    ModelCase("attention heads, MLP, views", Attention, (1, 5, 32)),
    ModelCase("residual MLP in bf16 (upcast oracle)", _half_mlp, (3, 16), torch.bfloat16),
]


def _analysis_and_removed(case: ModelCase):
    torch.manual_seed(0)
    model = case.build().eval()
    x = (torch.randn(case.shape).to(case.dtype),)
    a = hwprune.analyze(model, x)
    widths = {g.id: max(1, g.width // 2) for g in a.prunable}
    return a, a.graph.removed_of({gid: list(range(w, a.graph.groups[gid].width)) for gid, w in widths.items()})


@pytest.mark.filterwarnings("ignore:ratio 0.5 leaves")  # off the lattice: not what this checks
@pytest.mark.parametrize("case", MODELS, ids=[c.name for c in MODELS])
def test_the_oracle_reference_is_unchanged(case: ModelCase, monkeypatch):
    """The masked reference the oracle compares with is the same tensors with either masking,
    and slim verifies with the same figures."""
    a, removed = _analysis_and_removed(case)
    assert removed.any(), "the row cuts nothing"
    config = hwprune.SlimConfig(ratio=0.5)
    fast = expected_outputs(a, removed, config)
    fast_slim = hwprune.slim(a.fresh(), ratio=0.5, importance="l2")[1]["verify"]
    monkeypatch.setattr(masked, "zero_removed", masked.fill_removed)
    slow = expected_outputs(a, removed, config)
    slow_slim = hwprune.slim(a.fresh(), ratio=0.5, importance="l2")[1]["verify"]
    for (_, f), (_, s) in zip(fast, slow, strict=True):
        for ft, st in zip(f, s, strict=True):
            assert torch.equal(_bits(ft), _bits(st))
    assert fast_slim == slow_slim and fast_slim["passed"]


def test_a_wrong_cut_is_still_rejected():
    """Negative row: the reader of a cut group keeps its first channels instead of the kept ones."""
    torch.manual_seed(0)
    model = ConvBN().eval()
    x = (torch.randn(2, 3, 8, 8),)
    graph = hwprune.analyze(model, x).graph
    [group] = [g for g in graph.groups if "a.weight:0" in g.members]
    removed = graph.removed_of({group.id: [0, 3, 9]})
    kept = graph.param_kept(removed)
    kept["b.weight"] = {**kept["b.weight"], 1: np.arange(len(kept["b.weight"][1]))}  # the mistake
    slim = sliced(model, kept)
    with pytest.raises(VerificationError, match="not mask-equivalent to the original: max relative error"):
        verify(graph, model, slim, x, removed)
