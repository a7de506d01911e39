"""The report: `hwprune slim` writes the same JSON key tree as before the report was built in
one place (hwprune.report), a section a caller adds reaches the JSON and the HTML, and the
records the stages pass along are frozen.

The expected key trees were taken from `hwprune slim` on the code before the change (main at
8951383), not from the code under test: users script against these keys (docs/report.md).
A path is a key's place in the tree, dotted; `[]` stands for the items of a list of objects.
"""
import dataclasses
import json

import numpy as np
import pytest

from hwprune.cli import main

TINY = "models_for_cli:tiny_convnet"
LATTICE = "models_for_cli:lattice_convnet"

_CORE = """hwprune_version trace trace_note config config.ratio config.importance config.importance_auto config.strict config.seed
config.prune_hidden config.compensate config.objective {budget}params params.before params.after macs macs.before
macs.after verify verify.mode verify.max_abs_err verify.max_rel_err verify.rtol verify.batches verify.passed
compensated compensated.layers compensated.reads groups groups[].id groups[].members groups[].width_before
groups[].width_after groups[].frozen kept kept.features.0.weight kept.features.0.weight.0 kept.features.0.bias
kept.features.0.bias.0 kept.features.1.weight kept.features.1.weight.0 kept.features.1.bias
kept.features.1.bias.0 kept.features.3.weight kept.features.3.weight.0 kept.features.3.weight.1
kept.features.3.bias kept.features.3.bias.0 kept.features.4.weight kept.features.4.weight.0
kept.features.4.bias kept.features.4.bias.0 kept.fc.weight kept.fc.weight.1 kept.features.1.running_mean
kept.features.1.running_mean.0 kept.features.1.running_var kept.features.1.running_var.0
kept.features.4.running_mean kept.features.4.running_mean.0 kept.features.4.running_var
kept.features.4.running_var.0 declared_rules """
_MEMORY = "memory memory.in_place memory.why memory.weights_bytes memory.available_bytes "
_SOURCE = "source source.spec source.family source.input_shape source.inputs_from "

RATIO_TREE = (_CORE.format(budget="") + """lattice lattice.multiple lattice.from lattice.snapped lattice.off_lattice
""" + _MEMORY + _SOURCE + """layers layers[].name layers[].kernel layers[].c_in layers[].c_out layers[].ms layers[].source
outputs outputs.model outputs.report outputs.html""")

BUDGET_TREE = (_CORE.format(budget="config.budget config.budget.flops config.target config.min_width "
                                   "config.allow_block_removal ") + """plan plan.budget plan.budget.kind
plan.budget.value plan.unit plan.model plan.full plan.requested plan.planner plan.planner.limit
plan.planner.cost_before plan.planner.cost_after plan.planner.objective plan.planner.objective_value
plan.planner.retained_importance plan.planner.moves plan.groups plan.groups[].id plan.groups[].width_before
plan.groups[].width_after plan.groups[].lattice plan.groups[].share_of_saving plan.target plan.lattice
plan.lattice.multiple plan.lattice.from plan.predicted_before plan.predicted_after plan.attempts plan.tries_ended plan.landing
plan.importance_rounds plan.importance_rounds[].budget plan.importance_rounds[].budget.flops
plan.importance_rounds[].channels_cut plan.kept_try plan.met
depth depth.candidates depth.tries depth.tries[].removed depth.tries[].retained_importance depth.removed
depth.verify """ + _MEMORY + _SOURCE + "outputs outputs.model outputs.report")

KEY_TREES = [
    pytest.param([TINY, "--ratio", "0.5", "--html", "r.html"], RATIO_TREE, id="ratio-with-html"),
    pytest.param([LATTICE, "--flops", "0.5", "--allow-block-removal"], BUDGET_TREE, id="flops-with-blocks"),
]


def key_paths(value, prefix: str = "") -> list:
    """Every key's dotted path, in the order the JSON has them; a list of objects by its first."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out += [path, *key_paths(v, path)]
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out += key_paths(value[0], prefix + "[]")
    return out


@pytest.mark.parametrize("argv, expected", KEY_TREES)
def test_slim_report_has_the_key_tree_it_had(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", *argv, "-o", "out.pt", "--report", "out.json"]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert key_paths(report) == expected.split()


def _tiny_report():
    import warnings

    from models_for_cli import tiny_convnet

    import hwprune
    model, inputs = tiny_convnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hwprune.errors.LatticeWarning)
        slim_model, report = hwprune.slim(model, inputs, ratio=0.5)
    return slim_model, report, inputs


def test_a_section_added_by_a_caller_reaches_the_json_and_the_html(tmp_path):
    from hwprune.deploy.bundle import Bundle, bundle_paths, write_bundle
    from hwprune.report import Report

    slim_model, report, inputs = _tiny_report()
    ours = {"dataset": "imagenet-val<1k>", "top1": 0.713}
    built = Report.of(report).with_section("my_eval", ours)
    named = bundle_paths(tmp_path / "tiny.pt")
    bundle = Bundle(model=tmp_path / "tiny.pt", report=named["report"], html=named["html"])
    written = write_bundle(slim_model, built, inputs, bundle.stage(force=False))
    on_disk = json.loads(named["report"].read_text())
    assert on_disk["my_eval"] == ours and written["my_eval"] == ours
    assert list(on_disk)[: len(report)] == list(report)  # slim's sections first, in their order
    page = named["html"].read_text()
    assert "my_eval" in page and "imagenet-val&lt;1k&gt;" in page and "0.713" in page


def test_with_section_replaces_in_place_and_leaves_the_report_as_it_was():
    from hwprune.report import Report

    _, report, _ = _tiny_report()
    before = Report.of(report)
    after = before.with_section("source", {"spec": "a"}).with_section("config", {"ratio": 1})
    assert list(after.to_json()) == list(report) + ["source"]
    assert after["config"] == {"ratio": 1} and before["config"] == report["config"]
    assert "source" not in before and before.to_json() == report


@pytest.mark.parametrize("name, data, message", [
    pytest.param("", {}, "a section needs a name", id="empty-name"),
    pytest.param("my_eval", {"f": object()}, "not JSON", id="not-json"),
])
def test_with_section_refuses_what_the_json_cannot_hold(name, data, message):
    from hwprune.errors import InputError
    from hwprune.report import Report

    _, report, _ = _tiny_report()
    with pytest.raises(InputError, match=message):
        Report.of(report).with_section(name, data)


def _records():
    """One of each record hwprune.slim passes between its stages, from a real run."""
    from models_for_cli import tiny_convnet

    from hwprune import api
    from hwprune.analysis import analyze
    from hwprune.config import SlimConfig

    model, inputs = tiny_convnet()
    config = SlimConfig(ratio=0.5)
    analysis = analyze(model, inputs, config=config)
    stages = api.run_stages(analysis, config, widths={g.id: max(1, g.width // 2) for g in analysis.prunable})
    return {"Analysis": analysis, **{type(r).__name__: r for r in stages}}


@pytest.fixture(scope="module")
def records():
    return _records()


@pytest.mark.parametrize("name", ["Analysis", "Scores", "Plan", "Cut", "Verified", "Report"])
def test_the_stage_records_are_frozen(records, name):
    record = records[name]
    assert dataclasses.is_dataclass(record) and type(record).__dataclass_params__.frozen
    field = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, None)


def test_the_stages_chain_to_the_report_slim_returns(records):
    """The records of one run agree with one another and with slim's own report."""
    from models_for_cli import tiny_convnet

    import hwprune

    plan, cut, verified, report = records["Plan"], records["Cut"], records["Verified"], records["Report"]
    assert verified.cut is cut and np.array_equal(cut.removed, plan.removed)
    assert report["verify"] == verified.result and report["verify"]["passed"]
    model, inputs = tiny_convnet()
    widths = {g["id"]: g["width_after"] for g in report["groups"]}
    _, direct = hwprune.slim(model, inputs, widths=widths)
    assert direct["kept"] == report["kept"] and direct["params"] == report["params"]
