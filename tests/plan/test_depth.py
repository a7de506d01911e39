"""Depth pruning (--allow-block-removal): which blocks are removable, that removing them equals
zeroing their branch, and that the planner removes a block only where it pays."""
from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st
from torch import nn

import hwprune
from hwprune.cli import main
from hwprune.errors import VerificationError
from hwprune.plan.depth import Skip, remove_blocks, residual_blocks, verify_removal


class Res(nn.Module):
    """y = act(x + conv(relu(conv(x)))), optionally with a second use of the branch."""

    def __init__(self, c, act=True, leak=False, scale=1.0, hidden=None):
        super().__init__()
        hidden = hidden or 2 * c
        self.a, self.b = nn.Conv2d(c, hidden, 3, padding=1), nn.Conv2d(hidden, c, 3, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.mul_(scale)
        self.act, self.leak = act, leak
        self.seen = None

    def forward(self, x):
        branch = self.b(torch.relu(self.a(x)))
        y = x + branch
        if self.leak:
            y = y + branch.mean()  # the branch is read twice: not a removable block
        return torch.relu(y) if self.act else y


class TwoInputs(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, c, 1)

    def forward(self, x, z):
        return x + self.a(z)


class Down(nn.Module):
    """A block whose output differs in shape from its input (strided): not removable."""

    def __init__(self, c):
        super().__init__()
        self.a, self.skip = nn.Conv2d(c, c, 3, stride=2, padding=1), nn.Conv2d(c, c, 1, stride=2)

    def forward(self, x):
        return self.skip(x) + self.a(x)


class Net(nn.Module):
    def __init__(self, *blocks, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class Pair(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.stem, self.two, self.head = nn.Conv2d(3, c, 3, padding=1), TwoInputs(c), nn.Conv2d(c, 4, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.head(self.two(h, torch.relu(h)))


def _x(size=16):
    return (torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)),)


@pytest.mark.parametrize("model, removable, after", [
    (Net(Res(16), Res(16, act=False)), ["blocks.0", "blocks.1"], [["relu"], []]),
    (Net(Res(16, leak=True)), [], None),  # the branch also feeds another op
    (Net(Down(16), c=16), [], None),  # strided: the output is not the input's shape
    (Pair(), [], None),  # two activation inputs
])
def test_which_blocks_are_removable(model, removable, after):
    a = hwprune.analyze(model.eval(), _x())
    blocks = residual_blocks(a)
    assert [b.path for b in blocks] == removable
    if after is not None:
        assert [[op.rstrip("_") for op, _ in b.after] for b in blocks] == after


@pytest.mark.parametrize("name, count", [
    ("resnet18", 5), ("resnet50", 12), ("mobilenet_v2", 10), ("efficientnet_b0", 9), ("regnet_y_800mf", 10),
    ("convnext_tiny", 18), ("vit_b_16", 0),  # a ViT layer adds twice: neither add is the block's whole output
])
def test_torchvision_residual_blocks(name, count):
    size = 224 if name == "vit_b_16" else 64
    model = torchvision.models.get_model(name, weights=None).eval()
    a = hwprune.analyze(model, (torch.randn(1, 3, size, size),))
    blocks = residual_blocks(a)
    assert len(blocks) == count
    if blocks:  # removing any block equals zeroing its branch where the add reads it
        chosen = blocks[:: max(1, len(blocks) // 3)]
        result = verify_removal(a, remove_blocks(model, chosen), chosen)
        assert result["passed"]


@settings(max_examples=8, deadline=None)
@given(st.sets(st.integers(0, 4), min_size=1))
def test_removing_any_set_of_resnet18_blocks_equals_zeroing_their_branches(picked):
    model = torchvision.models.resnet18(weights=None).eval()
    a = _resnet18_analysis(model)
    blocks = [residual_blocks(a)[i] for i in sorted(picked)]
    slim = remove_blocks(model, blocks)
    assert all(isinstance(slim.get_submodule(b.path), Skip) for b in blocks)
    assert verify_removal(a, slim, blocks)["passed"]


_CACHE = {}


def _resnet18_analysis(model):
    if "a" not in _CACHE:
        _CACHE["a"] = hwprune.analyze(model, (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),))
    a = _CACHE["a"]
    a.model.load_state_dict(model.state_dict())
    return a


def test_the_removal_oracle_fails_when_another_block_is_removed():
    model = Net(Res(16), Res(16)).eval()
    a = hwprune.analyze(model, _x())
    first, second = residual_blocks(a)
    with pytest.raises(VerificationError, match="does not equal zeroing their branches"):
        verify_removal(a, remove_blocks(model, [second]), [first])


def _three_blocks():
    torch.manual_seed(0)
    return Net(Res(16), Res(16, hidden=8), Res(16), c=16).eval()  # the middle block owns the fewest weights


def test_a_block_that_keeps_little_importance_goes_where_width_is_launch_bound():
    # at 64x64 on the Jetson's analytic model the kernels are launch-bound: width buys little,
    # and the narrow middle block costs as much time as the others for less importance
    model, x = _three_blocks(), (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)
    slim, report = hwprune.slim(model, x, speedup=1.2, target="jetson-orin-nano", allow_block_removal=True)
    depth = report["depth"]
    assert [b["path"] for b in depth["removed"]] == ["blocks.1"]
    assert depth["verify"]["passed"] and report["verify"]["passed"]
    tries = depth["tries"]  # kept because its plan keeps more importance than width alone
    assert tries[1]["retained_importance"] > tries[0]["retained_importance"] > 0
    assert tries[2]["retained_importance"] < tries[1]["retained_importance"]  # a second block does not pay
    assert isinstance(slim.blocks[1], Skip)
    assert report["plan"]["predicted_after"] <= report["plan"]["predicted_before"] / 1.2 * 1.01
    fresh = Net(Res(16), Res(16, hidden=8), Res(16), c=16).eval()
    fresh.load_state_dict(model.state_dict())  # another checkpoint of the same architecture
    again = hwprune.apply(report, fresh, x)
    torch.testing.assert_close(again(*x), slim(*x))


def test_a_budget_width_cannot_meet_is_met_by_removing_blocks():
    model = _three_blocks()
    slim, report = hwprune.slim(model, _x(32), flops=0.45, min_width=16, allow_block_removal=True)
    depth = report["depth"]
    assert depth["tries"][0]["retained_importance"] is None  # width alone: unmeetable
    assert depth["removed"] and depth["verify"]["passed"]
    assert report["macs"]["after"] <= 0.45 * report["macs"]["before"] * 1.0001
    with pytest.raises(hwprune.BudgetError):
        hwprune.slim(model, _x(32), flops=0.45, min_width=16)


def test_without_cheap_blocks_the_width_plan_stands():
    torch.manual_seed(0)
    model = Net(Res(16), Res(16), c=16).eval()
    slim, report = hwprune.slim(model, _x(32), flops=0.7, allow_block_removal=True)
    assert report["depth"]["removed"] == [] and report["depth"]["verify"] is None
    assert not any(isinstance(m, Skip) for m in slim.modules())


def test_block_removal_needs_a_budget(tmp_path, monkeypatch):
    with pytest.raises(hwprune.InputError, match="needs a budget"):
        hwprune.slim(Net(Res(16)).eval(), _x(), ratio=0.5, allow_block_removal=True)
    monkeypatch.chdir(tmp_path)
    assert main(["slim", "models_for_cli:tiny_convnet", "--ratio", "0.5", "--allow-block-removal"]) != 0


def test_cli_reports_the_blocks_it_removed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", "models_for_cli:tiny_convnet", "--flops", "0.6", "--allow-block-removal", "--report",
                 "r.json", "-o", "s.pt"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "blocks removed" in out
    import json
    assert "depth" in json.loads((tmp_path / "r.json").read_text())
