"""The same `hwprune slim` command run twice writes byte-identical files: the model (.pt), the
ExportedProgram (.pt2), the ONNX file, the HTML report, and the JSON report apart from timings.

Oracle: two separate processes with different PYTHONHASHSEEDs (so that any output depending on
the order of a set of strings, or on an id, differs), the same command line in the same
directory, the outputs of the first moved aside; then a byte comparison. The only field
stripped is the report's onnx.seconds: the wall time of the ONNX export and of its onnxruntime
check, a measurement that differs between any two runs. Absolute paths in the report (onnx.path,
pt2.path) are the same because the command and its directory are.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]  # the helpers (bundle_writer.py) sit in tests/
COMMAND = ["slim", "models_for_cli:lattice_convnet", "--target", "jetson", "--params", "0.5", "-o", "tiny.pt",
           "--pt2", "tiny.pt2"]
FILES = ("tiny.pt", "tiny.pt2", "tiny.onnx", "tiny.report.html", "tiny.report.json")
TIMINGS = (("onnx", "seconds"),)  # measured wall times, the only fields that may differ


def _run(cwd: Path, hash_seed: str) -> None:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, HWPRUNE_CACHE=str(cwd.parent / "cache"),
               PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "hwprune.cli", *COMMAND], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stderr


def _without_timings(report: dict) -> dict:
    for section, field in TIMINGS:
        report.get(section, {}).pop(field, None)
    return report


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("twice")
    cwd, first = root / "run", root / "first"
    cwd.mkdir()
    _run(cwd, "1")
    cwd.rename(first)
    cwd.mkdir()
    _run(cwd, "2")
    return first, cwd


@pytest.mark.parametrize("name", FILES)
def test_the_same_command_twice_writes_the_same_bytes(two_runs, name):
    first, second = two_runs
    a, b = (first / name).read_bytes(), (second / name).read_bytes()
    if name.endswith(".json"):
        a_report, b_report = json.loads(a), json.loads(b)
        assert all(field in a_report[section] for section, field in TIMINGS)  # what is stripped is there
        a, b = (json.dumps(_without_timings(r)).encode() for r in (a_report, b_report))
    assert a == b, f"{name} differs between two runs of hwprune {' '.join(COMMAND)}"


def test_the_runs_wrote_only_the_bundle(two_runs):
    for folder in two_runs:
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet10t"])
def test_a_zoo_spec_gives_the_same_random_weights_each_time_and_leaves_the_callers_rng(spec):
    """A zoo spec's random weights come from a fixed seed, so the same command plans the same
    (auto's Fisher reads the weights' values); the caller's random state is left as it was."""
    import torch

    from hwprune.load import load_spec
    torch.manual_seed(123)
    first = load_spec(spec).module.state_dict()
    torch.manual_seed(456)  # the caller's state differs: the weights do not
    second = load_spec(spec).module.state_dict()
    drawn = torch.rand(1)
    torch.manual_seed(456)
    assert torch.equal(torch.rand(1), drawn), "loading drew from the caller's random state"
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
