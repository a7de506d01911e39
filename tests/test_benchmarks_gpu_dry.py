"""benchmarks/gpu/run.sh --dry: the GPU run's code on the CPU, tiny sizes, no CUDA.

It must run end to end and write one JSON in the suite's schema: the Triton BSR kernel checked
in Triton's interpreter against the dense product, the analytic model's predictions for the
conv and linear sweeps and a model, a slim model planned for the `cuda` target with
Torch-Pruning bisected to its MACs; every CUDA timing recorded as skipped. CI never needs a GPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu_dry.json"
    env = os.environ | {"PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_one_json_in_the_suite_schema_says_it_was_dry(dry):
    assert dry["schema"] == 1 and dry["results"]["dry"] is True and dry["how"]["settings"]["dry"] is True
    assert "benchmarks/gpu/driver.py --dry --out" in dry["how"]["command"]
    assert set(dry["results"]["parts"]) == {"bsr", "analytic", "slim"}
    assert not any("error" in part for part in dry["results"]["parts"].values())


def test_the_triton_kernel_matches_the_dense_product(dry):
    bsr = dry["results"]["parts"]["bsr"]
    assert bsr["rows"] and all(r["rel_err"] < 1e-2 for r in bsr["rows"])
    assert all("times" not in r for r in bsr["rows"])


@pytest.mark.parametrize("kind", ["conv", "linear", "model"])
def test_the_analytic_model_predicts_every_item_and_nothing_is_timed(dry, kind):
    rows = [r for r in dry["results"]["parts"]["analytic"]["rows"] if r["kind"] == kind]
    assert {r["batch"] for r in rows} == {1, 2}
    assert all("failed" not in r and r["predicted_ms"] > 0 and "measured_ms" not in r for r in rows), rows


def test_the_cuda_plan_and_torch_pruning_bisected_to_its_macs(dry):
    rows = dry["results"]["parts"]["slim"]["rows"]
    assert rows and all("unreachable" not in r and "error" not in r for r in rows), rows
    assert dry["results"]["parts"]["slim"]["planned_with"] == "analytic model"  # no GPU, no TensorRT here
    for r in rows:
        assert r["predicted_speedup"] > 1 and r["hwprune_macs"]["after"] < r["hwprune_macs"]["before"]
        target = r["hwprune_macs"]["after"] / r["hwprune_macs"]["before"]
        tp = r["torch_pruning"]
        assert tp["target_mac_fraction"] == pytest.approx(target)
        gaps = [abs(t["mac_fraction"] - target) for t in tp["tries"]]
        assert abs(tp["mac_fraction"] - target) == min(gaps)  # the closest try is kept
        assert tp["equal_macs"] or (min(t["mac_fraction"] for t in tp["tries"]) < target
                                    < max(t["mac_fraction"] for t in tp["tries"]))  # else bracketed
        assert r["batch_1"] == {"skipped": "dry run: no CUDA timing"}
