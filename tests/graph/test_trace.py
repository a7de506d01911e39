"""Tracing: torch.export first; torch.fx.symbolic_trace (lowered to ATen) where export fails,
recorded in the report; a clear TraceError where both fail."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprune
from hwprune.errors import TraceError
from hwprune.graph.rules import DECLARED


@torch.library.custom_op("hwtest::nofake", mutates_args=())
def nofake(x: torch.Tensor) -> torch.Tensor:  # no fake kernel: torch.export cannot trace it
    return x * 2


class UsesNoFake(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b, self.c = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):  # `a` is called twice: one parameter read by two graph nodes
        return self.c(self.b(self.a(x)).relu() + nofake(self.bn(self.a(x))))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else -self.a(x)


@pytest.fixture(autouse=True)
def _no_declarations():
    DECLARED.clear()
    yield
    DECLARED.clear()


def test_export_is_the_first_choice():
    a = hwprune.analyze(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)).eval(), torch.randn(1, 3, 4, 4))
    assert a.trace == "torch.export"


def test_fallback_to_symbolic_trace_is_recorded_and_exact():
    x = (torch.randn(1, 3, 8, 8),)
    model = UsesNoFake().eval()
    a = hwprune.analyze(model, x)
    assert a.trace == "symbolic_trace"
    assert "no fake impl" in a.graph.traced.note
    assert any(g.frozen and "nofake.default" in g.frozen for g in a.groups)
    hwprune.declare_rule("hwtest::nofake", like="elementwise")
    slim, report = hwprune.slim(model, x, ratio=0.5)
    assert report["trace"] == "symbolic_trace" and "torch.export failed" in report["trace_note"]
    assert report["verify"]["passed"] and report["params"]["after"] < report["params"]["before"]
    assert slim.a.weight.shape[0] < 8 and slim.a.out_channels == slim.a.weight.shape[0]


def test_untraceable_model_names_both_failures():
    with pytest.raises(TraceError, match="torch.export failed .*symbolic_trace failed"):
        hwprune.analyze(DataDependent().eval(), torch.randn(1, 3, 4, 4))


class CachesOnFirstCall(nn.Module):
    """ConViT's pattern: a tensor made on the first call and kept as an attribute (and a buffer
    registered then), which under torch.inference_mode are inference tensors."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.cache = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), None

    def forward(self, x):
        if self.cache is None or self.cache.shape[-1] != x.shape[-1]:
            self.cache = torch.linspace(0, 1, x.shape[-1])
            self.register_buffer("scale", torch.ones(1, 8, 1, 1) * 2, persistent=False)
        return self.b(self.a(x) * self.scale + self.cache)


def test_tensors_made_under_inference_mode_are_traced_as_normal_ones():
    model, x = CachesOnFirstCall().eval(), (torch.randn(1, 3, 6, 6),)
    with torch.inference_mode():  # as a user's first run, or a benchmark's reference, does
        expected = model(*x)
    assert model.cache.is_inference() and model.scale.is_inference()
    slim, report = hwprune.slim(model, x, ratio=0.5)
    assert report["trace"] == "torch.export" and report["verify"]["passed"]
    assert not model.cache.is_inference() and torch.equal(model.cache, torch.linspace(0, 1, 6))
    assert torch.allclose(model(*x), expected)
