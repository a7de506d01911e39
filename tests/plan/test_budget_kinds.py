"""Budget kinds (hwprune.plan.kinds): a row per registered kind, whose flag the CLI offers and
plans exactly as the API keyword; a kind registered at run time is offered, priced and
planned through the CLI and the API alike; the budget's own checks, with their messages.

Oracles: the CLI's report plan against hwprune.slim's for the same budget (the same record,
to the bit), and for the registered kind, its figure counted on the slim model itself.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import hwprune
from hwprune.cli import build_parser, main
from hwprune.cli.options import slim_budget
from hwprune.plan.kinds import BUDGET_KINDS, Budget, BudgetKind, budget_of, register_budget_kind
from hwprune.plan.pricing import size_pricing, weight_count

from models_for_cli import lattice_convnet

SPEC, SHAPE = "models_for_cli:lattice_convnet", "1,3,128,128"  # 32 and 64 channels: every kind below bites

# kind: (value, target): a budget lattice_convnet at 128x128 meets (analytic latency on the Orin
# Nano: 0.140 ms at full width; a target that is not this machine, so nothing is measured)
KIND_CASES = {
    "speedup": (1.2, "jetson-orin-nano"),
    "latency_ms": (0.12, "jetson-orin-nano"),
    "flops": (0.6, None),
    "params": (0.6, None),
}


def test_every_budget_kind_has_a_row():
    assert sorted(KIND_CASES) == sorted(BUDGET_KINDS), "add a KIND_CASES row for each new budget kind"


def _argv(kind: str, value: float, target: str | None, *more) -> list:
    return ["slim", SPEC, "--input-shape", SHAPE, BUDGET_KINDS[kind].flag, str(value),
            *(["--target", target] if target else []), *more]


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_the_flag_parses_to_the_keywords_budget(kind):
    value, target = KIND_CASES[kind]
    args = build_parser().parse_args(_argv(kind, value, target))
    assert slim_budget(args) == budget_of({kind: value}) == Budget(kind, value)


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_the_flag_plans_as_the_api_keyword(kind, tmp_path, monkeypatch):
    value, target = KIND_CASES[kind]
    monkeypatch.chdir(tmp_path)
    assert main(_argv(kind, value, target, "-o", "s.pt", "--report", "r.json")) == 0
    cli = json.loads((tmp_path / "r.json").read_text())
    model, _ = lattice_convnet()
    x = (torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)),)  # the CLI's --input-shape inputs
    _, api = hwprune.slim(model, x, **{kind: value}, target=target)
    assert cli["config"]["budget"] == api["config"]["budget"] == {kind: value}
    assert cli["plan"] == api["plan"]
    assert cli["kept"] == api["kept"]
    assert any(g["width_after"] < g["width_before"] for g in api["plan"]["groups"])


# ---------------------------------------------------------------- a kind registered at run time

def _weights_only(block, c_in, c_out):
    """Conv and linear weights, biases not counted."""
    found = weight_count(block, c_in, c_out)
    return 0.0 if found is None else found[0]


def _weights_pricing(graph, lm=None, progress=None):
    return size_pricing(graph, _weights_only, "weights")


def _fraction(v):
    return 0 < v <= 1


def _of_original(value, full):
    return value * full


WEIGHTS = BudgetKind("weights", "W", "keep at most this fraction of the conv and linear weights, biases not counted",
                     "a fraction in (0, 1] of the weights to keep", _fraction, _of_original, _weights_pricing)


@pytest.fixture
def weights_kind():
    register_budget_kind(WEIGHTS)
    try:
        yield WEIGHTS
    finally:
        BUDGET_KINDS.pop(WEIGHTS.name)


def _conv_linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_a_registered_kind_is_offered_and_planned_like_a_built_in(weights_kind, tmp_path, monkeypatch, capsys):
    assert main(["slim", "--help"]) == 0
    slim_help = " ".join(capsys.readouterr().out.split())
    assert "--weights W" in slim_help and WEIGHTS.help in slim_help
    assert slim_budget(build_parser().parse_args(["slim", SPEC, "--weights", "0.5"])) == Budget("weights", 0.5)
    monkeypatch.chdir(tmp_path)
    assert main(["slim", SPEC, "--weights", "0.5", "-o", "s.pt", "--report", "r.json"]) == 0
    cli = json.loads((tmp_path / "r.json").read_text())
    model, x = lattice_convnet()
    slim, api = hwprune.slim(model, x, budget=Budget("weights", 0.5))
    assert cli["config"]["budget"] == {"weights": 0.5} and cli["plan"] == api["plan"]
    assert api["plan"]["unit"] == "weights" and api["verify"]["passed"]
    assert _conv_linear_weights(slim) <= 0.5 * _conv_linear_weights(model)  # counted on the modules themselves
    slim_pass = hwprune.SlimPass(target="jetson-orin-nano", budget=hwprune.Budget("weights", 0.5))
    slim_pass(model, x)
    assert slim_pass.report["plan"]["budget"] == {"kind": "weights", "value": 0.5}
    assert slim_pass.report["kept"] == hwprune.slim(model, x, budget=Budget("weights", 0.5),
                                                    target="jetson-orin-nano")[1]["kept"]
    assert main(["slim", SPEC, "--weights", "1.5"]) == 2
    assert "--weights 1.5 is out of range: give a fraction in (0, 1] of the weights to keep" in capsys.readouterr().err


def test_a_kind_removed_again_is_no_longer_offered(capsys):
    register_budget_kind(WEIGHTS)
    BUDGET_KINDS.pop(WEIGHTS.name)
    assert main(["slim", SPEC, "--weights", "0.5"]) == 2
    assert "unrecognized arguments: --weights" in capsys.readouterr().err
    with pytest.raises(hwprune.InputError, match="budget 'weights' is unknown: choose one of speedup, latency_ms"):
        Budget("weights", 0.5)


def test_a_second_kind_of_a_name_or_a_keyword_of_slim_is_refused():
    with pytest.raises(ValueError, match="two budget kinds named flops"):
        register_budget_kind(BUDGET_KINDS["flops"])
    with pytest.raises(ValueError, match="'ratio' is a keyword of hwprune.slim"):
        register_budget_kind(dataclasses.replace(WEIGHTS, name="ratio"))
    assert "ratio" not in BUDGET_KINDS


# ---------------------------------------------------------------- the budget's own checks

BAD_BUDGETS = [  # (slim's budget keywords, allow_block_removal, the message)
    ({"ratio": 0.5, "speedup": 2.0}, False, ("slim was given ratio and speedup: give exactly one budget (ratio, "
                                             "speedup, latency_ms, flops, params) or explicit widths")),
    ({"budget": {"flops": 0.5}}, False, ("budget={'flops': 0.5} is not a Budget: give for example "
                                         "Budget('speedup', 2.0)")),
    ({"ratio": 0.5}, True, ("allow_block_removal (--allow-block-removal) needs a budget to weigh blocks against "
                            "width: give speedup, latency_ms, flops or params (--speedup, --latency-ms, --flops or "
                            "--params)")),
    ({"latency_ms": float("nan")}, False, "--latency-ms nan is out of range: give a positive number of ms"),
]


@pytest.mark.parametrize("given, blocks, message", BAD_BUDGETS)
def test_a_bad_budget_says_what_to_give(given, blocks, message):
    with pytest.raises(hwprune.InputError) as e:
        budget_of(given, blocks)
    assert message in str(e.value)


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_a_step_toward_a_budget_ends_at_it_and_its_figure_at_the_original(kind):
    """Budget.partial: t = 1 is the budget itself, t = 0 asks for the original's own figure
    (the rescoring rounds and iterative slim's schedule step along it)."""
    budget, full = Budget(kind, KIND_CASES[kind][0]), 2.0
    assert budget.partial(full, 1.0).figure(full) == pytest.approx(budget.figure(full))
    assert budget.partial(full, 0.0).figure(full) == pytest.approx(full)


# ---------------------------------------------------------------- iterative slim's rounds by kind

def _speedup_rounds(value, full):  # stated against the original, slim's reference in later rounds
    return [{"speedup": value ** 0.5}, {"speedup": value}]


def _latency_rounds(value, full):  # geometric from the original's predicted ms
    return [{"latency_ms": full * (value / full) ** 0.5}, {"latency_ms": value}]


SCHEDULE_CASES = {"speedup": (1.2, _speedup_rounds), "latency_ms": (0.12, _latency_rounds)}


@pytest.mark.parametrize("kind", sorted(SCHEDULE_CASES))
def test_iterative_rounds_step_toward_a_latency_budget_from_the_original(kind, tmp_path):
    """Two rounds on the Orin Nano's analytic model (predicted, never measured here): each
    round's budget is the kind's geometric step stated against the original's figure."""
    from hwprune.recover import RecoverConfig
    value, rounds_of = SCHEDULE_CASES[kind]
    model, _ = lattice_convnet()
    x = (torch.randn(1, 3, 128, 128),)
    torch.save(torch.randn(4, 3, 128, 128), tmp_path / "x.pt")
    _, report = hwprune.iterative_slim(model, x, tmp_path / "x.pt", rounds=2, budget=Budget(kind, value),
                                       target="jetson-orin-nano", recover=RecoverConfig(steps=1, batch_size=2))
    rounds = report["recover"]["rounds"]
    want = rounds_of(value, rounds[0]["slim"]["figure_before"])
    assert [list(r["budget"]) for r in rounds] == [list(w) for w in want]
    assert [v for r in rounds for v in r["budget"].values()] == pytest.approx([v for w in want for v in w.values()])
    assert report["config"]["budget"] == {kind: value} and report["plan"]["budget"] == {"kind": kind, "value": value}
    # the last round planned the cut model for the figure the budget asks of the original
    full = rounds[0]["slim"]["figure_before"]
    assert rounds[1]["slim"]["budget"]["value"] == pytest.approx(Budget(kind, value).figure(full))
    assert rounds[1]["slim"]["figure_before"] < full
