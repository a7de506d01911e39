"""bench_scale.py's timing against a baseline checkout (issue 17's "no slower than today"): the
pairs alternate with the baseline first, the ratio is of the medians, and a pair whose child
failed, did not verify, or imported another checkout's hwprune ends the comparison as failed.
The children are faked here; the real run is a benchmark (benchmarks/README.md#scale)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_scale as scale


@pytest.fixture
def base(tmp_path):
    """A baseline checkout: a git repository holding a hwprune package, committed."""
    (tmp_path / "hwprune").mkdir()
    (tmp_path / "hwprune" / "__init__.py").write_text("")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    return tmp_path


def _fake(monkeypatch, seconds: dict, broken: dict | None = None):
    """measure() that answers each side's next time; `broken` {(side, run): fields} spoils one."""
    calls, broken = [], broken or {}

    def measure(name, tokens, timeout, code=None):
        side = "baseline" if code else "this"
        n = sum(1 for s in calls if s == side)
        calls.append(side)
        row = {"status": "ok", "verified": True, "seconds": seconds[side][n],
               "code": str((code or scale.ROOT).resolve())}
        return row | broken.get((side, n), {})
    monkeypatch.setattr(scale, "measure", measure)
    return calls


def test_pairs_alternate_baseline_first_and_the_ratio_is_of_the_medians(monkeypatch, base):
    calls = _fake(monkeypatch, {"baseline": [20.0, 22.0, 21.0], "this": [19.0, 30.0, 18.0]})
    out = scale.against_baseline("tiny_fp32_ratio", base, 3, 16, 60)
    assert calls == ["baseline", "this"] * 3
    assert out["status"] == "ok" and out["median_s"] == {"baseline": 21.0, "this": 19.0}
    assert out["ratio"] == pytest.approx(19.0 / 21.0, abs=1e-4)
    head = subprocess.run(["git", "-C", str(base), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert out["baseline_commit"] == head and out["baseline_dirty"] is False and "commit" not in out


@pytest.mark.parametrize("broken, error", [
    ({("baseline", 1): {"status": "failed", "error": "MemoryError"}}, "baseline: MemoryError"),
    ({("this", 0): {"verified": False}}, "this: not verified"),
    ({("baseline", 0): {"code": "/elsewhere"}}, "baseline: the child imported hwprune from /elsewhere"),
    ({("this", 1): {"code": "/elsewhere"}}, "this: the child imported hwprune from /elsewhere"),
])
def test_a_pair_that_fails_ends_the_comparison_as_failed(monkeypatch, base, broken, error):
    _fake(monkeypatch, {"baseline": [20.0] * 3, "this": [19.0] * 3}, broken)
    out = scale.against_baseline("tiny_fp32_ratio", base, 3, 16, 60)
    assert out["status"] == "failed" and out["error"].startswith(error) and "ratio" not in out


def test_a_dirty_baseline_says_so(monkeypatch, base):
    (base / "hwprune" / "__init__.py").write_text("changed = True\n")
    _fake(monkeypatch, {"baseline": [1.0], "this": [1.0]})
    assert scale.against_baseline("tiny_fp32_ratio", base, 1, 16, 60)["baseline_dirty"] is True


@pytest.mark.parametrize("argv, message", [
    (["--baseline", "{tmp}"], "no hwprune/__init__.py there; give a commit of this repository, or a checkout"),
    (["--baseline", "0000000deadbeef"], "neither a folder nor a commit of"),
    (["--baseline", "{base}", "--pairs", "0"], "--pairs 0: give 1 or more"),
    (["--baseline", "{base}", "--baseline-configs", "70b"], "unknown configuration(s) ['70b']"),
])
def test_bad_baseline_arguments_are_refused(tmp_path, base, capsys, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(tmp=empty, base=base) for a in argv]
    with pytest.raises(SystemExit) as stop:
        scale.main([*argv, "--configs", "", "--out", str(tmp_path / "s.json")])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_commit_is_checked_out_for_the_run_and_removed_after(tmp_path):
    """--baseline COMMIT: a worktree of this repository at that commit, gone when the run ends."""
    found = subprocess.run(["git", "-C", str(scale.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("the tests run outside a git checkout of hwprune: no commit to check out")
    head = found.stdout.strip()
    with scale.checkout(head[:7], pytest.fail) as where:
        assert (where / "hwprune" / "__init__.py").is_file()
        assert subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip() == head
    assert not where.exists()
    listed = subprocess.run(["git", "-C", str(scale.ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(where) not in listed
