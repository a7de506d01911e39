"""Mean compensation (slim(compensate=True)): each row is a way a removed channel can be
consumed. Where the consumer can fold the channel's mean (a linear, an unpadded conv of any
kernel, groups or dilation), slim must fold it, and the oracle is mask equivalence with the
channel read as its mean there (verify(fills=), which slim runs). Where it cannot (a padded
conv: the border; a layer called twice: its bias would fold twice), the channel is zeroed as
without compensation. A hand-written oracle checks the means themselves, and a property
checks that compensation never moves a last layer's output further than zeroing does.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import hwprune


def _shifted(*mods):
    """BN statistics and shifts that leave the activations far from zero-mean."""
    for m in mods:
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(0.2, 1.0)


class PointwiseNorm(nn.Module):  # 1x1 conv without bias, BN after: the BN's running mean takes it
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
        _shifted(self.b1, self.b2)

    def forward(self, x):
        return self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))


class PointwiseBare(PointwiseNorm):  # 1x1 conv without bias or BN: it gains a bias
    def forward(self, x):
        return self.c2(torch.relu(self.b1(self.c1(x))))


class Unpadded(nn.Module):  # kxk, dilated and grouped convs without padding
    def __init__(self, kernel: int = 3, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 8, kernel, dilation=dilation, groups=groups)
        _shifted(self.b1)

    def forward(self, x):
        return self.c2(torch.relu(self.b1(self.c1(x))))


class Padded(Unpadded):  # the border would differ: not folded
    def __init__(self):
        super().__init__()
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)


class Mlp(nn.Module):  # linears with and without bias, GELU between
    def __init__(self, bias: bool = True):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 24), nn.Linear(24, 12, bias=bias), nn.Linear(12, 3, bias=bias)

    def forward(self, x):
        return self.fc3(torch.nn.functional.gelu(self.fc2(torch.nn.functional.gelu(self.fc1(x) + 1.0))))


class Shared(nn.Module):  # one linear called twice: its bias would be folded twice
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 24), nn.Linear(24, 24)
        self.out = nn.Linear(24, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x) + 1.0)
        return self.out(self.fc2(h) + self.fc2(h))


class Encoder(nn.Module):  # an FFN read by linear2 (torch's attention heads stay whole here: frozen)
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


IMAGE, TOKENS = (2, 3, 12, 12), (2, 5, 16)
# (model, input shape, layers that fold a mean at ratio 0.5, the slim layer that gains a bias)
ROWS = [
    ("1x1 conv into batch norm", PointwiseNorm, IMAGE, 1, None),
    ("1x1 conv without bias", PointwiseBare, IMAGE, 1, "c2"),
    ("3x3 conv", Unpadded, IMAGE, 1, None),
    ("dilated conv", lambda: Unpadded(3, dilation=2), IMAGE, 1, None),
    ("grouped conv", lambda: Unpadded(1, groups=2), IMAGE, 1, None),
    ("padded conv", Padded, IMAGE, 0, None),
    ("linear", Mlp, (4, 6), 2, None),
    ("linear without bias", lambda: Mlp(bias=False), (4, 6), 2, "fc3"),
    ("shared linear", Shared, (4, 6), 1, None),
    ("transformer encoder layer", Encoder, TOKENS, 1, None),
]


def _group_of(model, x: tuple, member: str) -> int:
    return next(g.id for g in hwprune.analyze(model, x).groups if member in g.members)


def _calibration(shape, n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g),) for _ in range(n)]


@pytest.mark.parametrize("name,build,shape,folded,gains_bias", ROWS, ids=[r[0] for r in ROWS])
def test_compensated_cut_is_mask_equivalent_with_means_where_folded(name, build, shape, folded, gains_bias):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    slim, report = hwprune.slim(model, (x,), ratio=0.5, compensate=True, calibration=_calibration(shape))
    assert report["verify"]["passed"] and ("means" in report["verify"]["mode"]) == (folded > 0)
    assert report["compensated"]["layers"] == folded
    assert report["config"]["compensate"] is True
    if gains_bias:
        assert slim.get_submodule(gains_bias).bias is not None and model.get_submodule(gains_bias).bias is None
    if build is PointwiseNorm:  # the shift went into the norm's running mean
        assert slim.c2.bias is None and not torch.equal(slim.b2.running_mean, model.b2.running_mean)
    _, plain = hwprune.slim(model, (x,), ratio=0.5)
    assert plain["kept"] == report["kept"]  # compensation changes biases, never which channels go
    assert plain["compensated"] == {"layers": 0, "reads": 0}


@pytest.mark.parametrize("model_type,folded_per_layer", [("bert", 2), ("llama", 0)])
def test_hugging_face_heads_and_neurons_fold_where_the_layer_has_a_bias(model_type, folded_per_layer):
    """BERT's attention output and FFN output linears have biases and fold the means of the heads
    and neurons they lose; LLaMA's have none and gain none (its config would rebuild them without)."""
    from hwprune.hf import small_model, widths_by_kind
    model, x = small_model(model_type)
    a = hwprune.analyze(model, x)
    slim, report = hwprune.slim(a, widths=widths_by_kind(a, heads=0.5, neurons=0.5), compensate=True)
    assert report["verify"]["passed"]
    assert report["compensated"]["layers"] == folded_per_layer * model.config.num_hidden_layers
    assert all(type(m) is type(n) and (getattr(m, "bias", None) is None) == (getattr(n, "bias", None) is None)
               for m, n in zip(model.modules(), slim.modules()))


def test_the_folded_mean_is_the_calibration_mean_of_the_removed_channel():
    """Hand oracle: fc3 reads the GELU outputs it lost as their means over the calibration batch."""
    torch.manual_seed(0)
    model = Mlp().eval()
    calib = _calibration((4, 6), n=3)
    slim, report = hwprune.slim(model, calib[0], widths={_group_of(model, calib[0], "fc2.weight:0"): 5},
                                compensate=True, calibration=calib)
    kept = report["kept"]["fc2.weight"]["0"]
    gone = sorted(set(range(12)) - set(kept))
    gelu = torch.nn.functional.gelu
    with torch.no_grad():
        hidden = lambda x: gelu(model.fc2(gelu(model.fc1(x) + 1.0)))  # noqa: E731
        mean = torch.cat([hidden(x) for (x,) in calib]).mean(0)
        x = torch.randn(7, 6)
        h = hidden(x)
        h[:, gone] = mean[gone]
        expected = model.fc3(h)
        assert torch.allclose(slim(x), expected, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(hidden=st.integers(4, 16), keep=st.floats(0.1, 0.9), shift=st.floats(-2, 2), seed=st.integers(0, 1000))
def test_compensation_never_moves_the_last_layer_further_than_zeroing(hidden, keep, shift, seed):
    """With the means taken on the inputs it is judged on, the last linear's output error is
    E||W (x - m)||^2 <= E||W x||^2: the mean is the best constant."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 3)).eval()
    model[0].bias.data += shift
    calib = _calibration((8, 5), n=2, seed=seed)
    widths = {_group_of(model, calib[0], "0.weight:0"): max(1, int(hidden * keep))}
    comp, _ = hwprune.slim(model, calib[0], widths=widths, compensate=True, calibration=calib)
    zero, _ = hwprune.slim(model, calib[0], widths=widths)
    with torch.no_grad():
        ref = torch.cat([model(x) for (x,) in calib])
        err = lambda m: float(((torch.cat([m(x) for (x,) in calib]) - ref) ** 2).sum())  # noqa: E731
        assert err(comp) <= err(zero) * (1 + 1e-5) + 1e-6


def test_fisher_with_compensation_scores_removal_to_the_mean():
    """A channel with a large constant output and no variance costs nothing to read as its
    mean: centred Fisher scores it ~0, plain Fisher (removal to zero) does not."""
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = 3.0  # channel 0: always 3
    calib = _calibration((8, 4), n=2)
    a = hwprune.analyze(model, calib[0]).with_calibration(calib)
    from hwprune.compensate import compensation_of
    from hwprune.importance import score
    from hwprune.verify import tensors_of
    plain = score(a.graph, tensors_of(model), "fisher", 0, model, calib)
    centred = score(a.graph, tensors_of(model), "fisher", 0, model, calib, compensation=compensation_of(a))
    g = next(i for i, grp in enumerate(a.groups) if grp.width == 6)
    assert plain[g][0] > 0.1 * plain[g].max()
    assert centred[g][0] < 1e-9 * max(centred[g].max(), 1e-12)


def test_apply_repeats_a_compensated_cut_on_another_checkpoint():
    torch.manual_seed(0)
    model = PointwiseNorm().eval()
    x = torch.randn(IMAGE)
    slim, report = hwprune.slim(model, (x,), ratio=0.5, compensate=True)
    again = hwprune.apply(report, model, (x,))
    with torch.no_grad():
        assert torch.allclose(again(x), slim(x), atol=1e-5)


def test_compensation_takes_calibration_with_a_weight_criterion():
    """L2 ranks by weights; the means still come from the calibration inputs given."""
    model = Mlp().eval()
    _, report = hwprune.slim(model, (torch.randn(4, 6),), ratio=0.5, compensate=True,
                             calibration=_calibration((4, 6)))
    assert report["compensated"]["layers"] == 2
