"""Fisher importance against its definition: E||dOut/dg_c||^2, where g_c scales channel c
wherever an op reads it and the channel ends there (a linear). Each row's model writes that
gated forward by hand (`gated`), and the oracle is its exact Jacobian; hwprune's figure
comes from the traced graph with random output projections, so the two agree up to the
projections' noise. Rows: channels read by linears in sequence; channels coupled through a
residual add (read by two linears, passed through the add); a channel scaled, reshaped and
flipped on its way to its linear (tanh: the oracle is a derivative, not a difference).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hwprune
from hwprune.importance import fisher as fisher_mod
from hwprune.importance import score


class Residual(nn.Module):
    def __init__(self, hidden: int = 8, inner: int = 12):
        super().__init__()
        self.fc1, self.up = nn.Linear(6, hidden), nn.Linear(hidden, inner)
        self.down, self.head = nn.Linear(inner, hidden), nn.Linear(hidden, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.head(h + self.down(self.up(h)))

    def gated(self, x, g):  # g: {first weight of the group: gate per channel}
        h = self.fc1(x)
        return self.head((h + self.down(self.up(h * g["fc1"]) * g["up"])) * g["fc1"])


class Scaled(nn.Module):
    """A channel through an activation and reshapes on its way to the linear that reads it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)).reshape(x.shape[0] // 2, 2, 8).flip(1).reshape(x.shape[0], 8))

    def gated(self, x, g):
        return self.fc2(torch.tanh(self.fc1(x)).reshape(x.shape[0] // 2, 2, 8).flip(1).reshape(x.shape[0], 8) * g["fc1"])


class Sequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 10), nn.Linear(10, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.fc3(self.fc2(self.fc1(x)))

    def gated(self, x, g):
        return self.fc3(self.fc2(self.fc1(x) * g["fc1"]) * g["fc2"])


ROWS = [(Sequential, (2, 6)), (Residual, (3, 6)), (Scaled, (4, 6))]


def _exact(model, x, removed: dict | None = None) -> dict:
    """{first weight of a group: ||dOut/dg_c||^2 per channel} from the hand-gated forward, at
    gates of 1, or 0 for the channels in `removed` ({name: indices})."""
    widths = {n: getattr(model, n).out_features for n in ("fc1", "fc2", "up") if hasattr(model, n)}
    at = {n: torch.ones(w) for n, w in widths.items()}
    for n, idx in (removed or {}).items():
        at[n][list(idx)] = 0.0
    out = {}
    for name in widths:
        def f(gate, name=name):
            return model.gated(x[0], {n: gate if n == name else at[n] for n in widths})
        jac = torch.autograd.functional.jacobian(f, at[name].clone())
        out[name] = (jac.detach() ** 2).reshape(-1, widths[name]).sum(0).numpy()
    return out


def _by_index(a, scores, fqn: str) -> np.ndarray:
    """A group's scores in the order of `fqn`'s output channels."""
    tid = next(t for t, d, f in a.graph.param_slots if f == fqn and d == 0)
    labels = a.graph.dim_labels(tid, 0)
    for g, s in zip(a.groups, scores):
        if np.isin(labels, g.labels).all():
            return np.array([s[list(g.labels).index(lab)] for lab in labels])
    raise AssertionError(f"no group holds {fqn}'s channels")


@pytest.mark.parametrize("build,shape", ROWS, ids=[r[0].__name__ for r in ROWS])
def test_fisher_is_the_expected_squared_output_change_per_channel(build, shape, monkeypatch):
    torch.manual_seed(0)
    model = build().eval()
    x = (torch.randn(*shape),)
    a = hwprune.analyze(model, x)
    monkeypatch.setattr(fisher_mod, "DRAWS", 3000)
    scores = score(a.graph, {}, "fisher", 0, model, [x])
    assert scores.across_groups
    for name, exact in _exact(model, x).items():
        got = _by_index(a, scores, f"{name}.weight")
        np.testing.assert_allclose(got, exact, rtol=0.12, err_msg=name)


CUT_ROWS = [(Sequential, (2, 6), {"fc1": [0, 3], "fc2": [2]}), (Residual, (3, 6), {"up": [1, 5, 6]})]


@pytest.mark.parametrize("build,shape,removed", CUT_ROWS, ids=[r[0].__name__ for r in CUT_ROWS])
def test_fisher_of_a_model_with_channels_cut_is_taken_at_their_zero_gates(build, shape, removed, monkeypatch):
    # what later rounds of a budget measure: the figures of the masked model
    torch.manual_seed(0)
    model = build().eval()
    x = (torch.randn(*shape),)
    a = hwprune.analyze(model, x)
    mask = np.zeros(int(a.graph.labels.max()) + 1, dtype=bool)
    for name, idx in removed.items():
        tid = next(t for t, d, f in a.graph.param_slots if f == f"{name}.weight" and d == 0)
        mask[a.graph.dim_labels(tid, 0)[idx]] = True
    monkeypatch.setattr(fisher_mod, "DRAWS", 3000)
    scores = score(a.graph, {}, "fisher", 0, model, [x], removed=mask)
    for name, exact in _exact(model, x, removed).items():
        np.testing.assert_allclose(_by_index(a, scores, f"{name}.weight"), exact, rtol=0.12, atol=1e-6 * exact.max(),
                                   err_msg=name)


def test_a_fisher_budget_is_approached_in_rounds_measured_on_the_cut_model():
    torch.manual_seed(0)
    model = Residual(32, 64).eval()
    x = (torch.randn(3, 6),)
    slim, report = hwprune.slim(model, x, flops=0.4, importance="fisher", calibration=[(torch.randn(3, 6),)] * 2)
    rounds = report["plan"]["importance_rounds"]
    assert [list(r["budget"]) for r in rounds] == [["flops"]] * 2
    assert [r["budget"]["flops"] for r in rounds] == pytest.approx([0.4 ** (1 / 3), 0.4 ** (2 / 3)], abs=1e-4)
    assert 0 < rounds[0]["channels_cut"] < rounds[1]["channels_cut"]
    assert report["verify"]["passed"] and report["plan"]["planner"]["cost_after"] <= 0.4 * report["plan"]["full"] * 1.001


def test_fisher_plans_on_one_scale_and_the_cut_stays_mask_equivalent():
    torch.manual_seed(0)
    model = Residual(32, 64).eval()
    x = (torch.randn(3, 6),)
    calib = [(torch.randn(3, 6),) for _ in range(4)]
    slim, report = hwprune.slim(model, x, flops=0.6, importance="fisher", calibration=calib)
    assert slim.up.out_features < 64 or slim.fc1.out_features < 32
    assert report["verify"]["passed"]
    assert report["config"]["importance"] == "fisher"


@pytest.mark.parametrize("calibration,message", [
    ([(torch.randn(5, 6),)], "traced with"),
    ([], "calibration is empty"),
], ids=["wrong-shape", "empty"])
def test_bad_calibration_is_a_clear_error(calibration, message):
    x = (torch.randn(3, 6),)
    with pytest.raises(hwprune.errors.InputError, match=message):
        hwprune.slim(Residual().eval(), x, ratio=0.5, importance="fisher", calibration=calibration)


@pytest.mark.parametrize("importance,says", [
    ("auto", "importance 'auto' chose 'l2' for this run \\(l2: a ratio"),  # the default: what it chose, and why
    ("l1", "importance 'l1' reads"),
])
def test_calibration_without_a_data_criterion_is_an_error(importance, says):
    x = (torch.randn(3, 6),)
    with pytest.raises(hwprune.errors.InputError, match=f"{says}.* only the weights and compensate is off"):
        hwprune.slim(Residual().eval(), x, ratio=0.5, importance=importance, calibration=[x])
