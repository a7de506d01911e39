"""What must be frozen is frozen, with a reason that names the op and its file:line, and a
declaration (hwprune.declare_rule) opens it again. --strict turns a freeze into an error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprune
from hwprune.errors import FrozenGroupError
from hwprune.graph.rules import DECLARED


class MemEffSwish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s * (1 + x * (1 - s)))


@torch.library.custom_op("hwtest::scale2", mutates_args=())
def scale2(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scale2.register_fake
def _(x):
    return torch.empty_like(x)


class Between(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.a, self.b = f, nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(self.f(self.a(x)))


FREEZE_CASES = [
    ("autograd-function", lambda: Between(MemEffSwish.apply), "custom autograd Function MemEffSwish",
     MemEffSwish),
    ("custom-op", lambda: Between(lambda y: scale2(y)), "scale2.default at ", "hwtest::scale2"),
]


@pytest.fixture(autouse=True)
def _no_declarations():
    DECLARED.clear()
    yield
    DECLARED.clear()


@pytest.mark.parametrize("name,build,reason,declare", FREEZE_CASES, ids=[c[0] for c in FREEZE_CASES])
def test_frozen_with_reason_then_declared(name, build, reason, declare):
    x = (torch.randn(1, 3, 8, 8),)
    model = build().eval()
    a = hwprune.analyze(model, x)
    frozen = [g.frozen for g in a.groups if g.frozen]
    assert any(reason in f for f in frozen), frozen
    assert any("test_freeze.py:" in f for f in frozen if reason in f), frozen  # names the user's line
    assert not a.prunable

    hwprune.declare_rule(declare, like="elementwise")
    slim, report = hwprune.slim(model, x, ratio=0.5)
    assert report["verify"]["passed"]
    assert report["params"]["after"] < report["params"]["before"]
    assert report["declared_rules"]


def test_model_output_is_frozen():
    a = hwprune.analyze(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)).eval(), (torch.randn(1, 3, 4, 4),))
    assert [g.frozen for g in a.groups if g.members[0].startswith("1.weight:0")] == ["model output"]


def test_strict_turns_a_freeze_into_an_error():
    model = Between(MemEffSwish.apply).eval()
    model.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = (torch.randn(1, 3, 8, 8),)
    hwprune.slim(model, x, ratio=0.5)  # the inner group is cut, the swish group frozen
    with pytest.raises(FrozenGroupError, match="MemEffSwish"):
        hwprune.slim(model, x, ratio=0.5, strict=True)


def test_declare_rule_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="no built-in rule named"):
        hwprune.declare_rule("hwtest::scale2", like="no_such_rule")
