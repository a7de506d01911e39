"""slim on an Analysis: the same cut as slim on the model, without a second trace, and the
analysis it was given stays as it was."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import hwprune
import hwprune.analysis
from hwprune.config import SlimConfig

from shared_models import SilentLiteral


def _resnetish() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 4)).eval()


@pytest.mark.parametrize("build", [_resnetish, SilentLiteral], ids=["convs", "silent-literal"])
def test_slim_of_an_analysis_equals_slim_of_the_model(build, monkeypatch):
    model, x = build().eval(), (torch.randn(2, 3, 6, 6),)
    _, expect = hwprune.slim(model, x, ratio=0.5)
    a = hwprune.analyze(model, x)
    frozen_before = [g.frozen for g in a.groups]
    traces = []
    monkeypatch.setattr(hwprune.analysis, "trace", lambda *args: traces.append(args))
    slim, got = hwprune.slim(a, ratio=0.5)
    assert traces == []  # the analysis's graph was used
    assert got["verify"]["passed"]
    assert got["kept"] == expect["kept"] and got["groups"] == expect["groups"]
    assert [g.frozen for g in a.groups] == frozen_before  # a cut that froze groups left `a` alone
    assert torch.allclose(slim(*x), hwprune.slim(a, ratio=0.5)[0](*x))


def test_slim_wants_an_analysis_or_a_model_with_inputs():
    model, x = _resnetish(), (torch.randn(1, 3, 6, 6),)
    a = hwprune.analyze(model, x)
    with pytest.raises(hwprune.InputError, match="an Analysis and example inputs"):
        hwprune.slim(a, x)
    with pytest.raises(hwprune.InputError, match="without example inputs"):
        hwprune.slim(model)
    with pytest.raises(hwprune.InputError, match="other custom rules"):
        hwprune.slim(a, config=SlimConfig(custom_rules=(("mylib::swish", "elementwise"),)))


@pytest.mark.parametrize("given, named", [
    ({"ratio": 0.25}, "ratio=0.25"),
    ({"importance": "l1", "seed": 3}, "importance='l1', seed=3"),
    ({"strict": True}, "strict=True"),
    ({"prune_hidden": True, "objective": "params"}, "prune_hidden=True, objective='params'"),
    ({"compensate": True}, "compensate=True"),
])
def test_slim_refuses_keywords_that_its_config_would_ignore(given, named):
    model, x = _resnetish(), (torch.randn(1, 3, 6, 6),)
    with pytest.raises(hwprune.InputError, match=re.escape(f"slim was given config= and {named}: the config holds")):
        hwprune.slim(model, x, config=SlimConfig(ratio=0.5), **given)


def test_slim_takes_a_config_with_keywords_left_at_their_defaults():
    model, x = _resnetish(), (torch.randn(1, 3, 6, 6),)
    _, report = hwprune.slim(model, x, config=SlimConfig(ratio=0.25, importance="l1"), importance="auto", seed=0)
    assert report["config"]["ratio"] == 0.25 and report["config"]["importance"] == "l1"  # the config's, not the keywords'
