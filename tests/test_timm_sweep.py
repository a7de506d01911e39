"""The timm sweep (benchmarks/bench_timm_sweep.py) on models small enough for CI: its per-model
record against what hwprune.slim itself reports, its choice of variant, and its figures from
hand-made rows (the full sweep is a benchmark: benchmarks/README.md#timm-and-ultralytics)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_timm_sweep as sweep

timm = pytest.importorskip("timm")


class WSNet(nn.Module):
    """NFNet's pattern at toy size: weight-standardized convs between a stem and a classifier."""

    def __init__(self):
        super().__init__()
        from timm.layers import ScaledStdConv2d
        self.stem, self.ws = nn.Conv2d(3, 16, 3, padding=1), ScaledStdConv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(torch.relu(self.ws(torch.relu(self.stem(x)))).mean((2, 3)))


@pytest.mark.parametrize("hidden", [False, True])
def test_a_row_says_what_slim_reports(hidden):
    torch.manual_seed(0)
    model = WSNet().eval()
    x, fresh = (torch.randn(1, 3, 8, 8),), (torch.randn(1, 3, 8, 8),)
    row = sweep.run_slim(model, x, fresh, sweep.shapes(model(*x)), prune_hidden=hidden)
    assert row["status"] == "ok" and not row["wrong"], row
    assert row["verify"]["passed"]
    assert row["verify"]["mode"].startswith("output fidelity" if hidden else "mask equivalence")
    kept = row["params_after"] / row["params_before"]
    assert row["kept"] == round(kept, 4) < 1
    if not hidden:  # the stem's channels are the WS conv's fan-in: frozen, with the reason named
        assert any("statistics over this dim" in why for why in row["frozen_reasons"]), row["frozen_reasons"]
    else:
        assert not row["frozen_reasons"]


def test_an_error_is_recorded_with_its_message():
    model = nn.Sequential(nn.Linear(4, 4)).eval()  # the input and output are all there is
    x = (torch.randn(1, 4),)
    row = sweep.run_slim(model, x, x, sweep.shapes(model(*x)))
    assert row["status"] == "error" and row["error"].startswith("NothingToPruneError: Sequential has no prunable")


HWPRUNE_PART = '{"family": "f", "status": "ok", "seconds": 3.0}'
WHOLE = '{"family": "f", "status": "ok", "seconds": 3.0, "torch_pruning": {"status": "ok", "kept": 0.5}}'


@pytest.mark.parametrize("printed,rc,status,tp,error", [
    ([], -9, "crash", None, "killed by signal 9"),  # died before hwprune's row: the family's crash
    ([HWPRUNE_PART], -9, "ok", "crash", "killed by signal 9"),  # died in Torch-Pruning
    ([HWPRUNE_PART], "timeout", "ok", "timeout", "no result within 9 s"),  # ran out of time in Torch-Pruning
    ([], "timeout", "timeout", None, "no result within 9 s"),
    ([HWPRUNE_PART, WHOLE], 0, "ok", "ok", None),
    ([HWPRUNE_PART], 0, "ok", None, None),  # --no-tp: hwprune's row is the whole row
])
def test_a_crash_or_timeout_in_torch_pruning_keeps_hwprunes_row(monkeypatch, printed, rc, status, tp, error):
    import subprocess
    stdout = "\n".join(["noise", *printed]) + "\n"

    def run(*a, **k):
        if rc == "timeout":
            raise subprocess.TimeoutExpired(a[0], 9, output=stdout)
        return subprocess.CompletedProcess([], rc, stdout=stdout, stderr="warnings")
    monkeypatch.setattr(sweep.subprocess, "run", run)
    row = sweep.child("f", type("Args", (), {"max_params": 1, "no_tp": False, "timeout": 9, "memory_gb": 0})())
    assert row["status"] == status and (row.get("torch_pruning") or {}).get("status") == tp, row
    if error:
        assert error in (row["torch_pruning"] if tp else row)["error"]


def test_a_family_past_the_memory_cap_gets_a_memory_error(monkeypatch):
    """--memory-gb caps the child's address space: an allocation past it raises in the child, so the
    family's row says MemoryError where the machine's OOM killer would have ended the process."""
    import subprocess
    real, done = subprocess.run, {}

    def run(_, **kw):  # the sweep's own call, with a child that allocates 2 GiB in place of a family
        done["r"] = real([sys.executable, "-c", "x = bytearray(2 * 2**30)"], **kw)
        return done["r"]
    monkeypatch.setattr(sweep.subprocess, "run", run)
    row = sweep.child("f", type("Args", (), {"max_params": 1, "no_tp": True, "timeout": 60, "memory_gb": 1.5})())
    assert row["status"] == "crash" and "MemoryError" in done["r"].stderr, row


def test_the_smallest_variant_within_the_cap_is_chosen(monkeypatch):
    counts = {"a_big": 90_000_000, "a_small": 5_000_000, "a_mid": 20_000_000, "a_broken": None}
    monkeypatch.setattr(sweep, "family_models", lambda family: list(counts))
    monkeypatch.setattr(sweep, "param_count", counts.get)
    assert sweep.smallest("a", 60_000_000) == ("a_small", counts)
    assert sweep.smallest("a", 1_000_000)[0] is None


def test_test_configurations_are_left_out():
    names = sweep.family_models("nfnet")
    assert "nf_regnet_b0" in names and "test_nfnet" not in names


def _run(kept, wrong=False, status="ok"):
    return {"status": status, "kept": kept, "wrong": wrong, "frozen_reasons": {"softmax at x.py:1 (f)": 3}}


def test_the_figures_count_families_by_their_best_verified_run():
    rows = {
        "cuts": {"family": "cuts", "status": "ok", "plain": _run(0.3), "torch_pruning": {"status": "ok", "kept": 0.3}},
        "hidden": {"family": "hidden", "status": "ok", "plain": _run(0.9), "hidden": _run(0.5),
                   "torch_pruning": {"status": "error", "error": "RuntimeError: x"}},
        "weak": {"family": "weak", "status": "ok", "plain": _run(0.8), "hidden": _run(0.7)},
        "wrong": {"family": "wrong", "status": "ok", "plain": _run(0.5, wrong=True),
                  "torch_pruning": {"status": "broken", "kept": 0.5}},
        "fails": {"family": "fails", "status": "error", "plain": {"status": "error", "error": "X: y"}},
        "slow": {"family": "slow", "status": "timeout", "error": "no result within 9 s"},
        "huge": {"family": "huge", "status": "skipped", "error": "no variant of at most 60M parameters"},
    }
    s = sweep.summary(rows)
    # hwprune's own timeout is one of its failures, in the shares
    assert (s["families"], s["skipped"], s["swept"], s["timeouts"]) == (7, 1, 6, ["slow"])
    assert (s["slim_and_verify"], s["cut_40"], s["used_prune_hidden"]) == (3, 2, 1)
    assert s["slim_and_verify_pct"] == 50.0 and s["cut_40_pct"] == 33.3
    assert s["wrong"] == ["wrong"] and s["errors"] == ["fails", "slow", "wrong"]
    assert s["torch_pruning"] == {"ran": 3, "ok": 1, "broken": 1, "errors": 1, "cut_40": 1}
