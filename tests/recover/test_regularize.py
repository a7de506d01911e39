"""Training-time penalties over hwprune's coupled groups.

Oracles: a hand-written group lasso that slices each channel's parameters by name (residual
and head groups included) for its value and autograd gradient, a central finite difference
for the gradient, training that drives channels to zero against the same training without
the penalty, and slim(importance="l2") then cutting exactly those channels without loss of
accuracy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwprune
from hwprune.errors import InputError


class ConvRes(nn.Module):
    """A residual group (stem, bn0, b, bnb, a's and fc's inputs) and an inner one (a, bna, b's input)."""

    def __init__(self, w: int = 6, inner: int = 5):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.a, self.bna = nn.Conv2d(w, inner, 3, padding=1), nn.BatchNorm2d(inner)
        self.b, self.bnb = nn.Conv2d(inner, w, 1, bias=False), nn.BatchNorm2d(w)
        self.fc = nn.Linear(w, 4)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        return self.fc(torch.relu(x + self.bnb(self.b(torch.relu(self.bna(self.a(x)))))).mean((2, 3)))

    @staticmethod
    def sets(m) -> list:
        res = [[m.stem.weight[c], m.bn0.weight[c], m.bn0.bias[c], m.b.weight[c], m.bnb.weight[c], m.bnb.bias[c],
                m.a.weight[:, c], m.fc.weight[:, c]] for c in range(6)]
        inner = [[m.a.weight[j], m.a.bias[j], m.bna.weight[j], m.bna.bias[j], m.b.weight[:, j]] for j in range(5)]
        return res + inner


class Heads(nn.Module):
    """Attention with 4 heads of 4 on a residual stream of 16: a head group and a hidden group."""

    def __init__(self, d: int = 16, heads: int = 4):
        super().__init__()
        self.hd = d // heads
        self.inp = nn.Linear(8, d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        b, n, _ = h.shape
        q, k, v = (f(h).view(b, n, -1, self.hd).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(h + self.o(y.transpose(1, 2).reshape(b, n, -1)))

    @staticmethod
    def sets(m) -> list:
        hidden = [[m.inp.weight[c], m.inp.bias[c], m.q.weight[:, c], m.k.weight[:, c], m.v.weight[:, c],
                   m.o.weight[c], m.o.bias[c], m.out.weight[:, c]] for c in range(16)]
        head = [[t[h * 4:(h + 1) * 4] for t in (m.q.weight, m.q.bias, m.k.weight, m.k.bias, m.v.weight, m.v.bias)]
                + [m.o.weight[:, h * 4:(h + 1) * 4]] for h in range(4)]
        return hidden + head


ROWS = [(ConvRes, (2, 3, 6, 6), 11), (Heads, (2, 5, 8), 20)]  # (model, input shape, channels penalized)


def _reference(model, lam: float) -> torch.Tensor:
    """The group lasso written out: per channel, the norm of its slices concatenated."""
    return lam * sum(torch.cat([s.reshape(-1) for s in parts]).norm() for parts in type(model).sets(model))


def _built(build, shape):
    torch.manual_seed(0)
    model = build().double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model, hwprune.GroupLasso(hwprune.analyze(model, (torch.randn(*shape, dtype=torch.float64),)), 0.3)


@pytest.mark.parametrize("build,shape,channels", ROWS, ids=[r[0].__name__ for r in ROWS])
def test_group_lasso_equals_the_hand_written_sum_over_coupled_groups(build, shape, channels):
    model, penalty = _built(build, shape)
    assert penalty.channels == channels  # every prunable group, each channel once
    got = penalty(model)
    want = _reference(model, 0.3)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    params = list(model.parameters())
    g_got = torch.autograd.grad(got, params, allow_unused=True)
    g_want = torch.autograd.grad(want, params, allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), g_got, g_want):
        if b is None:
            assert a is None or not a.any(), name
        else:
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("build,shape,channels", ROWS, ids=[r[0].__name__ for r in ROWS])
def test_group_lasso_gradient_matches_a_central_difference(build, shape, channels):
    model, penalty = _built(build, shape)
    params = list(model.parameters())
    grads = torch.autograd.grad(penalty(model), params, allow_unused=True)
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    slope = sum(float((d * gr).sum()) for d, gr in zip(direction, grads) if gr is not None)
    eps = 1e-6

    def at(t: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(t * d)
            value = penalty(model).item()
            for p, d in zip(params, direction):
                p.sub_(t * d)
        return value
    assert (at(eps) - at(-eps)) / (2 * eps) == pytest.approx(slope, rel=1e-5)


def test_a_zero_channel_has_zero_gradient_not_nan():
    model, penalty = _built(ConvRes, (2, 3, 6, 6))
    with torch.no_grad():
        for t in (model.a.weight[1], model.a.bias[1], model.bna.weight[1], model.bna.bias[1], model.b.weight[:, 1]):
            t.zero_()
    (grad,) = torch.autograd.grad(penalty(model), [model.a.weight])
    assert torch.isfinite(grad).all() and not grad[1].any()


@pytest.mark.parametrize("wrap", [nn.DataParallel, torch.compile], ids=["DataParallel", "compile"])
def test_penalties_read_through_a_wrapper(wrap):
    model, penalty = _built(ConvRes, (2, 3, 6, 6))
    wrapped = wrap(model)  # parameter names gain "module." / "_orig_mod."; compile compiles on first call only
    assert penalty(wrapped).item() == penalty(model).item()
    assert hwprune.BNL1(0.1)(wrapped).item() == hwprune.BNL1(0.1)(model).item()


def test_bn_l1_is_the_sum_of_absolute_bn_scales():
    model, _ = _built(ConvRes, (2, 3, 6, 6))
    with torch.no_grad():
        model.bna.weight[0] = -0.7
    got = hwprune.BNL1(0.2)(model)
    gammas = [model.bn0.weight, model.bna.weight, model.bnb.weight]
    assert got.item() == pytest.approx(0.2 * sum(g.detach().abs().sum().item() for g in gammas))
    grads = torch.autograd.grad(got, gammas)
    for g, gr in zip(gammas, grads):
        torch.testing.assert_close(gr, 0.2 * g.detach().sign())


# --- training with the penalty, then slim ---

from shared_models import MLP  # noqa: E402  (a residual MLP: tests/ is on the test path)


def _train(lam: float, steps: int = 300):
    """SGD with momentum on 4 Gaussian blobs in 16 dims (about 0.99 test accuracy), with the
    group lasso at strength lam; the same data and initial weights for every lam."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)

    def data(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return centres[y] + torch.randn(n, 16, generator=g), y
    torch.manual_seed(0)
    model = MLP()
    example = (torch.randn(2, 16),)
    penalty = hwprune.GroupLasso(hwprune.analyze(model, example), lam)
    model.train()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    for _ in range(steps):
        x, y = data(64)
        loss = F.cross_entropy(model(x), y) + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), penalty, example, data(2000)


def _accuracy(model, test) -> float:
    with torch.no_grad():
        return float((model(test[0]).argmax(1) == test[1]).float().mean())


@pytest.fixture(scope="module")
def trained():
    return {lam: _train(lam) for lam in (0.0, 3e-3)}


DRIVEN = 0.05  # a channel norm below this is "driven to zero" (unpenalized norms here are 0.69 to 2.7)


def test_group_lasso_drives_whole_channels_to_zero_where_training_alone_does_not(trained):
    plain = np.concatenate([n.detach().numpy() for n in trained[0.0][1].norms(trained[0.0][0])])
    model, penalty, _, test = trained[3e-3]
    norms = np.concatenate([n.detach().numpy() for n in penalty.norms(model)])
    assert (plain < DRIVEN).sum() == 0
    assert (norms < DRIVEN).sum() >= 20
    assert _accuracy(model, test) >= _accuracy(trained[0.0][0], test) - 0.01


def test_slim_with_l2_then_removes_the_channels_the_penalty_drove_down(trained):
    model, penalty, example, test = trained[3e-3]
    a = hwprune.analyze(model, example)
    norms = {g.id: n.detach().numpy() for g, n in zip(penalty.groups, penalty.norms(model))}
    # l2 sums the same squares over the same sets: it reads exactly the penalty's channel norms
    l2 = hwprune.importance.score(a.graph, hwprune.verify.tensors_of(model), "l2")
    for gid, n in norms.items():
        np.testing.assert_allclose(l2[gid], n, rtol=1e-5)
    widths = {gid: max(1, int((n >= DRIVEN).sum())) for gid, n in norms.items()}
    slim, report = hwprune.slim(a, importance="l2", widths=widths)
    assert report["verify"]["passed"]
    for gid, n in norms.items():
        fqn = a.groups[gid].members[0].rsplit(":", 1)[0]
        kept = set(report["kept"].get(fqn, {}).get("0", range(len(n))))
        removed = set(range(len(n))) - kept
        assert removed and all(n[i] < DRIVEN for i in removed), (gid, sorted(n))
        assert kept == set(np.argsort(-n)[:widths[gid]].tolist())
    assert _accuracy(slim, test) >= _accuracy(model, test) - 0.005


@pytest.mark.parametrize("make,message", [
    (lambda m, a: hwprune.GroupLasso(a, -1.0), "penalty strength -1.0: give a finite number >= 0"),
    (lambda m, a: hwprune.BNL1(float("nan")), "penalty strength nan"),
    (lambda m, a: hwprune.GroupLasso(a, 1e-3)(MLP()),
     r"the model has no parameter a.bias \(of 11 the penalty was built for\): build GroupLasso from the analysis"),
    (lambda m, a: hwprune.BNL1(1e-3)(MLP()), "MLP has no BatchNorm layer with a scale"),
], ids=["negative", "nan", "other-model", "no-bn"])
def test_penalty_misuse_is_a_clear_error(make, message):
    model = ConvRes()
    a = hwprune.analyze(model, (torch.randn(2, 3, 6, 6),))
    with pytest.raises(InputError, match=message):
        make(model, a)
