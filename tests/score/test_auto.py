"""The default importance, "auto" (hwprune.importance.auto): which criterion each kind of run
reads (one row per rule), and that slim's report says which and why."""
from __future__ import annotations

import pytest
import torch

import hwprune
from hwprune.config import SlimConfig
from hwprune.errors import InputError
from hwprune.importance.auto import AUTO, FISHER_MAX_PARAMS, resolve
from shared_models import MLP

RUN = dict(planned=False, loss_given=False, params=10_000, calibration_given=False)


@pytest.mark.parametrize("given, expect, why", [
    ({"planned": True}, "fisher", "fisher on the example inputs"),
    ({"planned": True, "calibration_given": True}, "fisher", "fisher on the calibration inputs"),
    ({}, "l2", "a ratio or given widths"),
    ({"calibration_given": True}, "l2", "a ratio or given widths"),  # compensation's inputs change no choice
    ({"planned": True, "loss_given": True}, "taylor", "loss_fn"),
    ({"planned": True, "params": FISHER_MAX_PARAMS + 1}, "l2", "parameters"),
    ({"planned": True, "objective": "params"}, "l2", "objective 'params'"),
], ids=["budget", "budget-calibration", "ratio", "ratio-calibration", "loss", "past-max-params", "objective"])
def test_auto_chooses(given, expect, why):
    name, reason = resolve(AUTO, **(RUN | given))
    assert name == expect
    assert reason.startswith(expect) and why in reason


@pytest.mark.parametrize("named", ["l2", "fisher", "random"])
def test_a_named_criterion_is_kept(named):
    assert resolve(named, **(RUN | {"planned": True, "loss_given": True})) == (named, None)


def _mlp():
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(4, 16),)


@pytest.mark.parametrize("budget, importance, expect", [
    ({"flops": 0.5}, AUTO, "fisher"),
    ({"ratio": 0.5}, AUTO, "l2"),
    ({"flops": 0.5}, "l2", "l2"),
], ids=["budget-auto", "ratio-auto", "budget-named"])
def test_slim_reports_the_criterion_it_read(budget, importance, expect):
    model, x = _mlp()
    _, report = hwprune.slim(model, x, importance=importance, **budget)
    assert report["config"]["importance"] == expect
    assert (report["config"]["importance_auto"] is None) == (importance != AUTO)


def test_auto_budget_plans_as_fisher_does():
    """auto on a budget is fisher on the example inputs: the same plan, channel for channel."""
    model, x = _mlp()
    _, auto = hwprune.slim(model, x, flops=0.5)
    _, fisher = hwprune.slim(model, x, flops=0.5, importance="fisher")
    assert auto["kept"] == fisher["kept"]


def test_unknown_importance_names_auto_among_the_choices():
    with pytest.raises(InputError, match="choose one of auto, l2"):
        SlimConfig(importance="magnitude")
