"""Every committed result in benchmarks/results says how it was made and which study remakes it
(issue 18: "Every result in benchmarks/results is from the current code and says how it was
made"; a result no study can reproduce is deleted)."""
import re
from pathlib import Path

import pytest

from benchmarks import record
from benchmarks.studies import STUDIES

RESULTS = Path(record.ROOT) / "benchmarks" / "results"
JSON = sorted(p.name for p in RESULTS.glob("*.json"))
HOW_KEYS = ("command", "commit", "dirty", "versions", "processor", "threads", "batch", "statistic", "started")


def written_by(name: str) -> list[str]:
    """The studies whose full run writes benchmarks/results/<name>."""
    return [s.name for s in STUDIES.values() if any(a == "{out}/" + name for a in s.args)]


@pytest.mark.parametrize("name", JSON)
def test_result_records_commit_machine_versions_and_command(name):
    loaded = record.load(RESULTS / name)
    assert loaded.schema == record.SCHEMA, f"{name}: written before results recorded how they were made"
    how = loaded.how
    missing = [k for k in HOW_KEYS if k not in how]
    assert not missing, f"{name}: its account lacks {missing}"
    assert re.fullmatch(r"[0-9a-f]{40}", how["commit"] or ""), f"{name}: no commit recorded"
    assert how["command"].startswith("python "), how["command"]
    assert how["processor"].get("name") and "isa" in how["processor"]
    assert {"torch", "hwprune"} <= set(how["versions"])


@pytest.mark.parametrize("name", JSON)
def test_result_is_written_by_a_study_of_the_suite(name):
    assert written_by(name), (f"{name}: no study in benchmarks/studies.py writes it, so `python -m benchmarks run` "
                              "cannot reproduce it: add the study, or delete the result")


@pytest.mark.parametrize("png", sorted(p.name for p in RESULTS.glob("*.png")))
def test_plot_belongs_to_a_result_or_a_study(png):
    stem = png.removesuffix(".png").removesuffix(".staircase")
    made = [s.name for s in STUDIES.values() if any(png in a for a in s.args)]
    assert (RESULTS / f"{stem}.json").is_file() or made, f"{png}: no result beside it and no study draws it"
