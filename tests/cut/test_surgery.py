"""Surgery on tensors held in several places: each is cut once, from the original, and stays
one tensor in the slim model; the oracle (inside hwprune.slim) checks the result."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprune


class TiedAcrossModules(nn.Module):
    """c shares a's weight (not its bias): the tensor appears in `kept` under two names."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 16), nn.Linear(16, 4)
        self.c.weight = self.a.weight

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.d(h + self.c(self.b(h)))


def test_a_weight_tied_across_modules_is_cut_once_and_stays_tied():
    torch.manual_seed(0)
    model = TiedAcrossModules().eval()
    slim, report = hwprune.slim(model, (torch.randn(2, 8),), ratio=0.5)
    assert report["verify"]["passed"]
    assert {"a.weight", "c.weight"} <= set(report["kept"])
    assert slim.a.weight is slim.c.weight and slim.a.weight.shape == (8, 8)
    assert model.a.weight is model.c.weight and model.a.weight.shape == (16, 8)  # the input is untouched


class StdConvBetween(nn.Module):
    """conv -> weight-standardized conv (timm's ScaledStdConv2d) -> conv."""

    def __init__(self, groups=1):
        super().__init__()
        from timm.layers import ScaledStdConv2d
        self.a, self.b, self.c = nn.Conv2d(3, 16, 1), ScaledStdConv2d(16, 16, 3, padding=1, groups=groups), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def _standardized_reference(model: StdConvBetween, x, keep_in, keep_out, keep_fan_in):
    """The slim model's value, computed by hand: the kept channels of the original, each output
    channel's weights standardized over the fan-in that stays."""
    import torch.nn.functional as F
    b = model.b
    y = torch.relu(model.a(x))[:, keep_in]
    w = b.weight[keep_out][:, keep_fan_in]  # a grouped conv's fan-in: the channels kept within each group
    w = F.batch_norm(w.reshape(1, len(keep_out), -1), None, None, weight=(b.gain * b.scale)[keep_out].view(-1),
                     training=True, momentum=0.0, eps=b.eps).reshape_as(w)
    y = torch.relu(F.conv2d(y, w, b.bias[keep_out], b.stride, b.padding, b.dilation, b.groups))
    return F.conv2d(y, model.c.weight[:, keep_out], model.c.bias)


@pytest.mark.parametrize("groups", [1, 4])
def test_a_weight_standardized_conv_cuts_its_fan_in_under_prune_hidden(groups):
    """Cutting the fan-in of a weight-standardized conv changes its statistics, so it is cut only
    under prune_hidden; the cutter must then read the conv's input, not its weight, as the call's
    input (or it sets groups from the weight's fan-in), and the result is the hand-computed one."""
    torch.manual_seed(0)
    model = StdConvBetween(groups).eval()
    x = (torch.randn(2, 3, 6, 6),)
    slim, report = hwprune.slim(model, x, ratio=0.5, prune_hidden=True)
    assert slim.b.weight.shape[1] * slim.b.groups == slim.b.in_channels < 16
    assert slim.b.groups == groups
    kept = report["kept"]
    keep_in = torch.as_tensor(kept["a.weight"]["0"])
    keep_out, keep_fan_in = (torch.as_tensor(kept["b.weight"].get(d, range(n))) for d, n in (("0", 16), ("1", 16 // groups)))
    with torch.inference_mode():
        torch.testing.assert_close(slim(*x), _standardized_reference(model, *x, keep_in, keep_out, keep_fan_in))
    plain, plain_report = hwprune.slim(model, x, ratio=0.5)  # mask equivalence: the fan-in stays
    assert plain.b.in_channels == 16 and plain_report["verify"]["passed"]
    assert any(g["frozen"] and "statistics over this dim" in g["frozen"] for g in plain_report["groups"])


class OwnsSplit(nn.Module):
    """CSPNet's CrossStage (split(self.expand_chs // 2)) and YOLO11's C2PSA (split((self.c, self.c))):
    a width kept as an int attribute of a module without a cutter, read in forward."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.expand_chs, self.c = how, 16, 8
        self.exp, self.m, self.out = nn.Conv2d(3, 16, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = self.exp(x)
        a, b = y.split(self.expand_chs // 2, dim=1) if self.how == "split" else y.split((self.c, self.c), dim=1)
        return self.out(torch.cat([self.m(torch.relu(a)), b], dim=1))


@pytest.mark.parametrize("how,attr", [("split", "expand_chs"), ("split_with_sizes", "c")])
def test_a_width_a_module_owns_follows_the_cut(how, attr):
    torch.manual_seed(0)
    model = OwnsSplit(how).eval()
    slim, report = hwprune.slim(model, (torch.randn(1, 3, 6, 6),), ratio=0.5)
    assert report["verify"]["passed"] and report["verify"]["mode"] == "mask equivalence"
    assert not [g for g in report["groups"] if g["frozen"] and "size in forward" in g["frozen"]], report["groups"]
    assert slim.exp.out_channels == 8 and getattr(slim, attr) == getattr(model, attr) // 2


class LayerScaleBlock(nn.Module):
    """ConvNeXt's block: a layer scale held by the block itself, which keeps no size attribute."""

    def __init__(self, keeps_width: bool = False):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 4, 1)
        self.gamma = nn.Parameter(torch.rand(16) + 0.5)
        if keeps_width:
            self.width = 16  # a size of its own tensor that nothing would fix after a cut

    def forward(self, x):
        return self.b(self.a(x) * self.gamma.view(1, -1, 1, 1))


def test_a_module_that_keeps_no_size_needs_no_cutter():
    torch.manual_seed(0)
    x = (torch.randn(1, 3, 6, 6),)
    slim, report = hwprune.slim(LayerScaleBlock().eval(), x, ratio=0.5)
    assert report["verify"]["passed"] and slim.gamma.shape == (8,) and slim.a.out_channels == 8


def test_a_module_that_keeps_a_size_without_a_cutter_stays_frozen():
    torch.manual_seed(0)
    x = (torch.randn(1, 3, 6, 6),)
    with pytest.raises(hwprune.NothingToPruneError, match="no cutter"):
        hwprune.slim(LayerScaleBlock(keeps_width=True).eval(), x, ratio=0.5)


class TokensOfSixteen(nn.Module):
    """hiera's failure in small: a reshape to a literal 16 features keeps the element count when `a`
    is cut, so the error is raised inside nn.Linear (torch's linear.py), a line that every Linear
    passes; an unrelated branch (`other`) must keep its cut."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        self.other, self.o = nn.Linear(4, 12), nn.Linear(12, 4)

    def forward(self, x):
        h = self.a(x).relu().reshape(x.shape[0], -1, 16)
        z = self.b(h)
        y = self.o(self.other(x).relu())
        return self.c(z.relu()).sum(1) + y.sum(1)


def test_a_size_in_forward_that_raises_in_a_torch_module_blames_the_model_line():
    torch.manual_seed(0)
    slim, report = hwprune.slim(TokensOfSixteen().eval(), (torch.randn(2, 4, 4),), ratio=0.5)
    frozen = {g["members"][0]: g["frozen"] for g in report["groups"]}
    assert "test_surgery.py" in frozen["a.weight:0"] and "does not follow a cut" in frozen["a.weight:0"]
    assert frozen["other.weight:0"] is None and slim.other.out_features < 12  # the unrelated branch is cut
