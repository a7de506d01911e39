"""`python -m benchmarks stale`: a result is current only where no commit it names has different
product code (or a different script) from the checkout, and none was measured on uncommitted
changes. Each row builds a small git history in a temporary folder."""
import json
import subprocess

import pytest

from benchmarks import staleness


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.com")
    git(tmp_path, "config", "user.name", "t")
    for rel, text in {"hwprune/core.py": "a = 1\n", "benchmarks/bench_x.py": "x = 1\n", "README.md": "r\n",
                      "kernels/k.cpp": "int k;\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first")
    (tmp_path / "benchmarks" / "results").mkdir()
    return tmp_path


def result(repo, how: dict, rows=None) -> staleness.Staleness:
    path = repo / "benchmarks" / "results" / "x.json"
    path.write_text(json.dumps({"schema": 1, "how": how, "results": {"rows": rows or {}}}))
    return staleness.staleness(path, repo)


def commit_change(repo, rel, text):
    (repo / rel).write_text(text)
    git(repo, "commit", "-qam", f"change {rel}")


# (what changes after the result was made, whether the result stays current, a word its reason gives)
CASES = [
    (None, True, "current"),
    ("README.md", True, "current"),
    ("hwprune/core.py", False, "hwprune/core.py"),
    ("kernels/k.cpp", False, "kernels/k.cpp"),
    ("benchmarks/bench_x.py", False, "bench_x.py"),
]


@pytest.mark.parametrize("changed, current, word", CASES, ids=[str(c[0]) for c in CASES])
def test_a_change_after_the_result(repo, changed, current, word):
    first = git(repo, "rev-parse", "HEAD")
    if changed:
        commit_change(repo, changed, "changed\n")
    s = result(repo, {"commit": first, "dirty": False, "command": "python benchmarks/bench_x.py --out y.json"})
    assert s.current is current
    assert word in s.why()


# (the command a result records, the scripts it names that exist in the checkout)
SCRIPTS = [
    ("python benchmarks/bench_x.py --out y.json", ("benchmarks/bench_x.py",)),
    ("python /elsewhere/checkout/benchmarks/bench_x.py", ("benchmarks/bench_x.py",)),
    ("python bench_x.py", ("benchmarks/bench_x.py",)),
    ("python benchmarks/gpu/driver.py --dry", ("benchmarks/gpu/driver.py",)),
    ("python benchmarks/gone.py", ()),
    ("python -m benchmarks run pipeline", ()),
]


@pytest.mark.parametrize("command, scripts", SCRIPTS, ids=[c[0] for c in SCRIPTS])
def test_the_scripts_a_result_names(repo, command, scripts):
    (repo / "benchmarks" / "gpu").mkdir()
    (repo / "benchmarks" / "gpu" / "driver.py").write_text("d = 1\n")
    assert staleness.scripts_of({"how": {"command": command}}, repo) == scripts


def test_an_uncommitted_change_to_the_code_makes_it_stale(repo):
    s = result(repo, {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False, "command": "python bench_x.py"})
    assert s.current
    (repo / "hwprune" / "core.py").write_text("a = 2\n")
    assert not staleness.staleness(repo / "benchmarks" / "results" / "x.json", repo).current


# what the result says besides its own commit (HEAD); OLD stands for the commit before the code changed
@pytest.mark.parametrize("how, rows, word", [
    ({"dirty": True}, None, "uncommitted"),
    ({"settings": {"parts": [{"commit": "OLD", "dirty": False}]}}, None, "changed since"),
    ({}, {"a": {"commit": "OLD (a row merged from an earlier run)"}}, "changed since"),
    ({}, {"a": {"commit": "0123456789abcdef0123456789abcdef01234567"}}, "unknown here: 0123456"),
], ids=["dirty", "an older part", "an older row", "an unknown commit"])
def test_every_commit_it_names_counts(repo, how, rows, word):
    old = git(repo, "rev-parse", "HEAD")
    commit_change(repo, "hwprune/core.py", "a = 2\n")
    how, rows = json.loads(json.dumps([how, rows]).replace("OLD", old))
    s = result(repo, {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False, **how}, rows)
    assert not s.current
    assert word in s.why()


def test_a_commit_named_in_full_and_short_is_one():
    full = "0123456789abcdef0123456789abcdef01234567"
    assert staleness.commits_of({"how": {"commit": full}, "results": {"rows": {"a": {"commit": full[:7]}}}}) == (full,)


def test_a_result_without_a_commit_is_stale(repo):
    s = result(repo, {"command": "python bench_x.py"})
    assert not s.current and "names no commit" in s.why()


def test_main_exits_1_when_any_is_stale(repo, capsys):
    head = git(repo, "rev-parse", "HEAD")
    result(repo, {"commit": head, "dirty": False})
    assert staleness.main(repo / "benchmarks" / "results", repo) == 0
    commit_change(repo, "hwprune/core.py", "a = 3\n")
    assert staleness.main(repo / "benchmarks" / "results", repo) == 1
    assert "0 of 1 results current" in capsys.readouterr().out
