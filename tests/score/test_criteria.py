"""Every registered importance criterion against an oracle (one row each), Taylor against the
leave-one-out oracle on a trained model, and the errors of data criteria.

The table's model is a conv net with BN and a residual add, so that both prunable groups have
several members: the residual group (stem, bn0, b, bnb, a's input, fc's input) and the inner
group (a, bna, b's input). One channel of each is dead: every parameter it owns is zero, so
it computes zero everywhere and every criterion but `random` must rank it strictly last. Each
row's oracle then computes the criterion's definition for the inner group by hand, from the
eager model (slices of named tensors, forward hooks, autograd), independently of the graph.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

import hwprune
from hwprune.errors import InputError
from hwprune.importance import CRITERIA, Needs, data_criteria, score
from hwprune.verify import tensors_of
from shared_models import MLP

DEAD_RES, DEAD_INNER = 2, 1


class ResNetlet(nn.Module):
    def __init__(self, w: int = 8, inner: int = 12, classes: int = 5):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.a, self.bna = nn.Conv2d(w, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner)
        self.b, self.bnb = nn.Conv2d(inner, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.fc = nn.Linear(w, classes)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = self.bnb(self.b(self.inner(x)))
        return self.fc(torch.relu(x + y).mean((2, 3)))

    def inner(self, x):  # the inner group's channels where b consumes them
        return torch.relu(self.bna(self.a(x)))


def _table_model() -> ResNetlet:
    torch.manual_seed(0)
    m = ResNetlet()
    with torch.no_grad():
        for bn in (m.bn0, m.bna, m.bnb):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
        for t in (m.stem.weight, m.b.weight, m.bn0.weight, m.bn0.bias, m.bnb.weight, m.bnb.bias,
                  m.bn0.running_mean, m.bnb.running_mean):
            t[DEAD_RES] = 0
        m.bn0.running_var[DEAD_RES] = m.bnb.running_var[DEAD_RES] = 1e-3
        m.a.weight[:, DEAD_RES] = m.fc.weight[:, DEAD_RES] = 0
        for t in (m.a.weight, m.bna.weight, m.bna.bias, m.bna.running_mean):
            t[DEAD_INNER] = 0
        m.bna.running_var[DEAD_INNER] = 1e-3
        m.b.weight[:, DEAD_INNER] = 0
    return m.eval()


def _calibration(n: int = 2) -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, 8, 8, generator=g),) for _ in range(n)]


# --- the hand oracles: the inner group's figure per channel, from the eager model ---

def _inner_slices(m: ResNetlet, j: int) -> list:
    t = {k: v.detach() for k, v in (dict(m.named_parameters()) | dict(m.named_buffers())).items()}
    return [t["a.weight"][j], t["bna.weight"][j], t["bna.bias"][j], t["bna.running_mean"][j],
            t["bna.running_var"][j], t["b.weight"][:, j]]


def _hand_l2(m, calib):
    return np.array([float(sum(s.pow(2).sum() for s in _inner_slices(m, j)).sqrt()) for j in range(12)])


def _hand_l1(m, calib):
    return np.array([float(sum(s.abs().sum() for s in _inner_slices(m, j))) for j in range(12)])


def _hand_bn(m, calib):
    return m.bna.weight.detach().abs().numpy()


def _inner_acts(m, calib) -> list:
    with torch.no_grad():
        return [m.inner(torch.relu(m.bn0(m.stem(x)))) for (x,) in calib]


def _hand_activation(m, calib):
    return np.mean([a.abs().mean((0, 2, 3)).numpy() for a in _inner_acts(m, calib)], axis=0)


def _hand_apoz(m, calib):
    return np.mean([(a != 0).double().mean((0, 2, 3)).numpy() for a in _inner_acts(m, calib)], axis=0)


def _self_label(m, x, labels=None):
    """The default loss: cross-entropy against the unmasked model's own predictions."""
    if labels is None:
        with torch.no_grad():
            labels = m(x).argmax(-1)
    return labels


def _hand_taylor(m, calib):
    total = np.zeros(12)
    for (x,) in calib:
        loss = F.cross_entropy(m(x), _self_label(m, x))
        params = dict(m.named_parameters())
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        gw = {k: (grads[k] * params[k]).detach() for k in params}
        per = np.array([float(gw["a.weight"][j].sum() + gw["bna.weight"][j] + gw["bna.bias"][j]
                              + gw["b.weight"][:, j].sum()) for j in range(12)])
        total += per ** 2
    return np.sqrt(total / len(calib))


def _hand_loss_change(m, calib):
    labels = [_self_label(m, x) for (x,) in calib]

    def mean_loss(zero=None):
        hook = m.bna.register_forward_hook(  # relu(0) = 0: zeroing bna's output zeroes the channel at b
            lambda mod, inp, out: out.index_fill(1, torch.tensor([zero]), 0.0)) if zero is not None else None
        with torch.no_grad():
            value = np.mean([float(F.cross_entropy(m(x), y)) for (x,), y in zip(calib, labels)])
        if hook is not None:
            hook.remove()
        return value
    base = mean_loss()
    return np.array([abs(mean_loss(j) - base) for j in range(12)])


# (criterion, hand oracle of the inner group or None, rtol). fisher's definition is checked
# against an exact Jacobian in tests/score/test_importance.py; here it gets the dead-channel oracle.
ROWS = {
    "l2": (_hand_l2, 1e-5),
    "l1": (_hand_l1, 1e-5),
    "bn": (_hand_bn, 1e-6),
    "random": (None, 0),
    "fisher": (None, 0),
    "activation": (_hand_activation, 1e-5),
    "apoz": (_hand_apoz, 1e-6),
    "taylor": (_hand_taylor, 1e-4),
    "loss_change": (_hand_loss_change, 1e-4),
}


def test_every_registered_criterion_has_a_row():
    assert set(ROWS) == set(CRITERIA), "add a row (with an oracle) for each new criterion"


@pytest.fixture(scope="module")
def table():
    m = _table_model()
    calib = _calibration()
    return m, calib, hwprune.analyze(m, calib[0])


def _group_of(a, fqn: str) -> int:
    tid = next(t for t, d, f in a.graph.param_slots if f == fqn and d == 0)
    lab = a.graph.dim_labels(tid, 0)
    return next(g.id for g in a.groups if np.isin(lab, g.labels).all())


_MEMO: dict = {}


def _scores(table, name: str, seed: int = 0, again: bool = False):
    """The table model's scores, computed once per (criterion, seed) unless `again`."""
    m, calib, a = table
    if again or (name, seed) not in _MEMO:
        _MEMO[(name, seed)] = score(a.graph, tensors_of(m), name, seed, m, calib)
    return _MEMO[(name, seed)]


@pytest.mark.parametrize("name", list(ROWS))
def test_criterion_has_the_groups_widths_and_is_deterministic(table, name):
    m, calib, a = table
    s = _scores(table, name)
    assert [len(v) for v in s] == [g.width for g in a.groups]
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in s)
    assert s.across_groups == CRITERIA[name].across_groups
    for v, w in zip(s, _scores(table, name, again=True)):
        np.testing.assert_array_equal(v, w)


@pytest.mark.parametrize("name", [n for n in ROWS if n != "random"])
@pytest.mark.parametrize("member,dead", [("a.weight", DEAD_INNER), ("stem.weight", DEAD_RES)],
                         ids=["inner", "residual"])
def test_a_channel_with_no_weights_ranks_strictly_last(table, name, member, dead):
    m, calib, a = table
    s = _scores(table, name)[_group_of(a, member)]
    others = np.delete(s, dead)
    assert s[dead] < others.min(), f"{name}: dead channel {s[dead]:.4g}, others from {others.min():.4g}"


@pytest.mark.parametrize("name", [n for n, (oracle, _) in ROWS.items() if oracle is not None])
def test_criterion_matches_its_definition_computed_by_hand(table, name):
    m, calib, a = table
    oracle, rtol = ROWS[name]
    got = _scores(table, name)[_group_of(a, "a.weight")]
    want = oracle(m, calib)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


def test_random_is_a_seeded_uniform_control(table):
    a = table[2]
    s0, s0_again, s1 = _scores(table, "random", 0), _scores(table, "random", 0, again=True), \
        _scores(table, "random", 1)
    assert all((v >= 0).all() and (v < 1).all() for v in s0)
    assert all(np.array_equal(u, v) for u, v in zip(s0, s0_again))
    assert not any(np.array_equal(u, v) for u, v, g in zip(s0, s1, a.groups) if g.width > 1)


# --- Taylor against the leave-one-out oracle on a trained model ---

def _blobs(n: int, centres, g) -> tuple:
    y = torch.randint(0, len(centres), (n,), generator=g)
    return centres[y] + torch.randn(n, centres.shape[1], generator=g), y


@pytest.fixture(scope="module")
def trained():
    """An MLP with a residual group trained for 300 Adam steps on 4 Gaussian blobs (~98% test
    accuracy), and 8 calibration batches of 128 with their labels."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    torch.manual_seed(0)
    m = MLP()
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(300):
        x, y = _blobs(64, centres, g)
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x, y = _blobs(1024, centres, g)
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() > 0.9
    return m, [_blobs(128, centres, g) for _ in range(8)]


def _labelled(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


# Spearman of the pooled prunable channels (24 + 32), measured over training seeds 0-4:
# labelled 0.81-0.96 (a trained model sits near the labelled loss's minimum, where the
# gradient is small and noisy: first order is weakest there), default 0.92-0.99; random
# scores reach |0.07|, so the thresholds separate a working criterion from noise.
SPEARMAN_ROWS = [("labelled loss", _labelled, 0.7), ("default label-free loss", None, 0.85)]


@pytest.mark.parametrize("loss_fn,threshold", [r[1:] for r in SPEARMAN_ROWS], ids=[r[0] for r in SPEARMAN_ROWS])
def test_taylor_ranks_channels_as_the_leave_one_out_loss_change_does(trained, loss_fn, threshold):
    m, batches = trained
    calib = batches if loss_fn is not None else [(x,) for x, _ in batches]
    a = hwprune.analyze(m, calib[0][:1])
    prunable = [g.id for g in a.prunable]
    taylor = score(a.graph, {}, "taylor", 0, m, calib, loss_fn=loss_fn)
    oracle = score(a.graph, {}, "loss_change", 0, m, calib, loss_fn=loss_fn)
    rand = score(a.graph, {}, "random", 0)
    pooled = lambda s: np.concatenate([s[i] for i in prunable])  # noqa: E731
    rho = spearmanr(pooled(taylor), pooled(oracle)).statistic
    assert rho >= threshold, f"Spearman {rho:.3f} < {threshold}"
    assert abs(spearmanr(pooled(rand), pooled(oracle)).statistic) < threshold - 0.3


# --- through slim, and the errors ---

def test_slim_with_a_loss_criterion_and_labelled_calibration_cuts_the_lowest_and_verifies(trained):
    m, batches = trained
    calib = batches[:2]
    slim, report = hwprune.slim(m, calib[0][:1], ratio=0.5, importance="taylor", calibration=calib,
                                loss_fn=_labelled)
    assert report["verify"]["passed"] and report["config"]["importance"] == "taylor"
    a = hwprune.analyze(m, calib[0][:1])
    s = score(a.graph, {}, "taylor", 0, m, calib, loss_fn=_labelled)[_group_of(a, "up.weight")]
    kept = report["kept"]["up.weight"]["0"]
    assert sorted(kept) == sorted(np.argsort(-s, kind="stable")[:len(kept)].tolist())


@pytest.mark.parametrize("name", ["taylor", "activation"])
def test_a_budget_plans_on_data_criteria_and_the_cut_verifies(trained, name):
    # taylor's figures share one unit across groups, so the budget is approached in rounds
    # re-measured on the masked model, as Fisher's; activation's are normalized per parameter
    m, batches = trained
    calib = [(x,) for x, _ in batches[:2]]
    slim, report = hwprune.slim(m, calib[0], flops=0.6, importance=name, calibration=calib, min_width=1)
    assert report["verify"]["passed"]
    assert report["plan"]["planner"]["cost_after"] <= 0.6 * report["plan"]["full"] * 1.001
    assert ("importance_rounds" in report["plan"]) == CRITERIA[name].across_groups


@pytest.mark.parametrize("name", data_criteria())
def test_slim_without_calibration_measures_on_the_example_inputs(name):
    m = _table_model()
    x = _calibration(1)[0]
    _, implicit = hwprune.slim(m, x, ratio=0.5, importance=name)
    _, explicit = hwprune.slim(m, x, ratio=0.5, importance=name, calibration=[x])
    assert implicit["kept"] == explicit["kept"]


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))).sum()


NEGATIVE = [
    pytest.param(lambda m, x: score(m[1].graph, {}, "taylor", 0, m[0], None), "measures on inputs: give the model "
                 "and calibration", id="score-without-calibration"),
    pytest.param(lambda m, x: score(m[1].graph, {}, "activation", 0, None, [x]), "measures on inputs",
                 id="score-without-model"),
    pytest.param(lambda m, x: score(m[1].graph, {}, "l3"), "importance 'l3' is unknown: choose one of l2, l1",
                 id="unknown"),
    pytest.param(lambda m, x: hwprune.slim(m[0], x, ratio=0.5, importance="l2", loss_fn=_labelled),
                 "importance 'l2' reads the weights, not a loss: loss_fn and teacher are for taylor, loss_change",
                 id="loss_fn-for-a-weight-criterion"),
    pytest.param(lambda m, x: hwprune.slim(m[0], x, ratio=0.5, importance="fisher", loss_fn=_labelled),
                 "importance 'fisher' reads calibration inputs, not a loss", id="loss_fn-for-fisher"),
    pytest.param(lambda m, x: hwprune.slim(m[0], x, ratio=0.5, importance="taylor",
                                           loss_fn=lambda model, b: model(*b)),
                 r"loss_fn returned Tensor\(4, 5\): return a scalar tensor", id="loss_fn-not-scalar"),
    pytest.param(lambda m, x: hwprune.slim(Scalar().eval(), (torch.randn(3, 6),), ratio=0.5, importance="taylor"),
                 r"the default loss needs an output of logits .* floating outputs are \[\(\)\]: give loss_fn",
                 id="default-loss-without-logits"),
    pytest.param(lambda m, x: score(m[1].graph, {}, "taylor", 0, m[0], [x], loss_fn=_labelled, teacher=m[0]),
                 "both loss_fn and teacher were given", id="loss_fn-and-teacher"),
    pytest.param(lambda m, x: hwprune.slim(m[0], x, ratio=0.5, importance="l1", calibration=[x]),
                 "importance 'l1' reads only the weights .*fisher, activation, apoz, taylor, loss_change",
                 id="calibration-for-a-weight-criterion"),
]


@pytest.mark.parametrize("call,message", NEGATIVE)
def test_criterion_misuse_is_a_clear_error(table, call, message):
    m, calib, a = table
    with pytest.raises(InputError, match=message):
        call((m, a), calib[0])


def test_a_teacher_gives_the_distillation_loss_zero_at_the_teacher_itself(trained):
    m, batches = trained
    calib = [(x,) for x, _ in batches[:2]]
    a = hwprune.analyze(m, calib[0])
    same = score(a.graph, {}, "taylor", 0, m, calib, teacher=m)
    assert all(np.abs(s).max() < 1e-6 for s in same)  # at the teacher the gradient vanishes
    other = MLP().eval()
    moved = score(a.graph, {}, "taylor", 0, m, calib, teacher=other)
    assert min(s.max() for s, g in zip(moved, a.groups) if g.frozen is None) > 1e-3


@pytest.mark.parametrize("name", list(CRITERIA))
def test_the_cli_offers_every_criterion(name, tmp_path, monkeypatch):
    from hwprune.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    out = tmp_path / "slim.pt"
    assert main(["slim", "models_for_cli:tiny_convnet", "--ratio", "0.5", "--importance", name, "-o", str(out),
                 "--report", str(tmp_path / "r.json")]) == 0
    import json
    assert json.loads((tmp_path / "r.json").read_text())["config"]["importance"] == name
    assert CRITERIA[name].needs in Needs


def _channel_index(ctx):
    """A registered-at-run-time criterion for the test below: channel i scores i + 1."""
    return [np.arange(1.0, g.width + 1) for g in ctx.graph.groups]


def test_a_criterion_registered_at_run_time_is_offered_and_used_everywhere(tmp_path, monkeypatch, capsys):
    """The criteria's names are read from the registry when used (SlimConfig's check, the data
    criteria, the CLI's --importance choices and help), not copied when hwprune is imported."""
    from hwprune.cli import main
    from hwprune.config import SlimConfig
    from hwprune.importance import criterion
    name = "channel_index_for_test"
    criterion(name, Needs.INPUTS, summary="channel i scores i + 1")(_channel_index)
    try:
        assert name in data_criteria() and SlimConfig(importance=name).importance == name
        assert main(["slim", "--help"]) == 0
        assert f"{name}: channel i scores i + 1 (on --calibration" in " ".join(capsys.readouterr().out.split())
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).resolve().parents[1]))
        assert main(["slim", "models_for_cli:tiny_convnet", "--ratio", "0.5", "--importance", name, "-o", "s.pt",
                     "--report", "r.json"]) == 0
        import json
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["config"]["importance"] == name
        # channel i scores i + 1, so every cut keeps the last channels of each dim it cuts
        from models_for_cli import TinyConvNet
        shapes = {k: v.shape for k, v in TinyConvNet().state_dict().items()}
        cut = [(idx, shapes[fqn][int(d)]) for fqn, dims in report["kept"].items() for d, idx in dims.items()
               if len(idx) < shapes[fqn][int(d)]]
        assert cut and all(idx == list(range(n - len(idx), n)) for idx, n in cut), cut
    finally:
        CRITERIA.pop(name)
    with pytest.raises(InputError, match=f"importance '{name}' is unknown"):
        SlimConfig(importance=name)
