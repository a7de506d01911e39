"""python -m benchmarks run: the studies' registry and the runner (with stand-in studies: nothing
is measured here)."""
import json

import pytest

from benchmarks import record, suite
from benchmarks.studies import STUDIES, Study, quick_set
from hwprune.errors import InputError


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_names_a_script_that_exists_and_writes_into_out(name):
    s = STUDIES[name]
    assert (suite.HERE / s.script).is_file()
    for args in (s.args, s.quick or ()):
        outs = [a for a in args if "{out}" in a]
        assert len(outs) <= 1 and all(a.startswith("{out}/") for a in outs)
    assert s.quick is None or s.quick_minutes > 0


def test_the_quick_set_fits_ten_minutes_by_its_own_estimates():
    assert sum(s.quick_minutes for s in quick_set()) <= 10


@pytest.mark.parametrize("names, quick, message", [
    (["nosuch"], False, "no study named nosuch: choose among"),
    (["pipeline"], True, "pipeline: no --quick variant"),
])
def test_a_bad_selection_is_refused_by_name(names, quick, message):
    with pytest.raises(InputError, match=message):
        suite.select(names, quick)


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    """Three studies in a stand-in benchmarks/ folder: one passes, one fails, one lacks a module."""
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "ok.py").write_text("import sys; print('row 1'); open(sys.argv[2], 'w').write('{}')\n")
    (bench / "bad.py").write_text("print('measuring'); raise SystemExit('the kernel is not built')\n")
    studies = {s.name: s for s in (
        Study("ok", "ok.py", "passes", ("--out", "{out}/ok.json"), ("--out", "{out}/ok.json"), quick_minutes=0.1),
        Study("bad", "bad.py", "fails", (), (), quick_minutes=0.1),
        Study("lacking", "ok.py", "skipped", (), (), needs=("no_such_module_hwprune",), quick_minutes=0.1))}
    monkeypatch.setattr(suite, "HERE", bench)
    monkeypatch.setattr(suite, "STUDIES", studies)
    monkeypatch.setattr(suite, "quick_set", lambda: list(studies.values()))
    return tmp_path


def test_the_runner_says_which_passed_failed_or_were_skipped(stand_ins, capsys):
    out = stand_ins / "out"
    status = suite.run([], quick=True, out=out)
    assert status == 1  # one failed
    account = record.load(out / "logs" / "suite.json")
    by_name = {o["name"]: o for o in account.results["studies"]}
    assert {n: o["status"] for n, o in by_name.items()} == {"ok": "passed", "bad": "failed", "lacking": "skipped"}
    assert "the kernel is not built" in by_name["bad"]["why"]
    assert "needs no_such_module_hwprune" in by_name["lacking"]["why"]
    assert json.loads((out / "ok.json").read_text()) == {}  # {out} was the output folder
    assert (out / "logs" / "bad.log").read_text() == "measuring\nthe kernel is not built\n"
    assert by_name["ok"]["command"] == f"python benchmarks/ok.py --out {out}/ok.json"
    assert "  bad | measuring" in capsys.readouterr().out


def test_all_passing_exits_zero(stand_ins):
    assert suite.run(["ok"], out=stand_ins / "out") == 0
