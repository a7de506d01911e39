"""benchmarks/README.md's results tables are generated from benchmarks/results: they must not drift.

No measuring here: the tables are rendered from the committed JSON and compared with the
committed README. When this fails, run `python -m benchmarks readme` and commit the README
(or the result that changed)."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import readme, record

ROOT = Path(__file__).resolve().parent.parent


def test_committed_readme_is_what_its_results_generate():
    text = readme.README.read_text()
    assert readme.generate(text) == text, "benchmarks/README.md differs from its results: python -m benchmarks readme"


def test_every_table_has_its_block_in_the_readme():
    assert sorted(readme.blocks(readme.README.read_text())) == sorted(readme.TABLES)


@pytest.mark.parametrize("name", sorted(readme.TABLES))
def test_each_table_reads_its_result_file(name):
    """The oracle of a table is its file: change one figure in it and the table changes with it."""
    table = readme.TABLES[name]
    text = readme.render(name)
    assert text.startswith("| ") and text.count("\n|") >= 2  # a header, its rule and at least one row
    assert table.result is None or (readme.RESULTS / table.result).is_file()


@pytest.mark.parametrize("name, path, value, shown", [
    ("speedup_accuracy", ("rows", 0, "measured_speedup"), 9.876, "9.88x"),
    ("vs_torch_pruning_auto", ("rows", 0, "hwprune", "efficiency"), 0.123, "0.12 / "),
    ("sparse", ("summary", "native_over_dense_worst", "0.90"), 4.321, "(4.32x)"),
    ("pass_speed", ("models", "resnet50", "ratio_hwprune_over_tp"), 9.9, "9.9x"),
])
def test_a_changed_figure_changes_the_table(tmp_path, name, path, value, shown):
    result = readme.TABLES[name].result
    data = json.loads((readme.RESULTS / result).read_text())
    results = data["results"] if "schema" in data else data
    node = results
    for key in path[:-1]:
        node = node[key]
    assert shown not in readme.render(name)
    node[path[-1]] = value
    (tmp_path / result).write_text(json.dumps(data))
    assert shown in readme.render(name, tmp_path)


def test_a_block_no_table_renders_is_named():
    from hwprune.errors import InputError
    text = ("<!-- BEGIN GENERATED nosuch: python -m benchmarks readme -->\n| x |\n"
            "<!-- END GENERATED nosuch -->\n")
    with pytest.raises(InputError, match="generated block 'nosuch' that no table renders"):
        readme.generate(text)


def test_text_outside_the_markers_is_kept(tmp_path):
    shutil.copy(readme.RESULTS / "sparse_minilm.json", tmp_path / "sparse_minilm.json")
    text = ("hand-written 1.23x\n<!-- BEGIN GENERATED sparse_minilm: python -m benchmarks readme -->\nstale\n"
            "<!-- END GENERATED sparse_minilm -->\nafter 4.56x\n")
    out = readme.generate(text, tmp_path)
    assert out.startswith("hand-written 1.23x\n") and out.endswith("after 4.56x\n") and "stale" not in out


# ---------------------------------------------------------------- record.py

def test_a_result_round_trips_with_how_it_was_made(tmp_path):
    how = record.capture(threads=1, batch=8, statistic="median", settings={"rounds": 3})
    path = record.write(tmp_path / "sub" / "r.json", how, {"rows": [1, 2]})
    loaded = record.load(path)
    assert loaded.schema == record.SCHEMA and loaded.results == {"rows": [1, 2]}
    assert loaded.how["threads"] == 1 and loaded.how["batch"] == 8 and loaded.how["settings"] == {"rounds": 3}
    assert set(loaded.how["versions"]) >= {"python", "torch", "onnxruntime", "torch-pruning", "hwprune"}
    assert loaded.how["processor"]["name"] and "isa" in loaded.how["processor"]
    assert loaded.how["command"].startswith("python")


def test_a_file_from_before_the_schema_reads_as_its_whole_self(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"versions": {"torch": "2"}, "rows": [3]}))
    loaded = record.load(tmp_path / "old.json")
    assert loaded.schema == 0 and loaded.results["rows"] == [3] and loaded.how == {"versions": {"torch": "2"}}


def test_another_schema_is_refused_by_name(tmp_path):
    from hwprune.errors import InputError
    (tmp_path / "new.json").write_text(json.dumps({"schema": 99, "how": {}, "results": {}}))
    with pytest.raises(InputError, match="result schema 99, this checkout reads schema 1"):
        record.load(tmp_path / "new.json")


@pytest.mark.parametrize("change, dirty", [(None, False), ("tracked", True), ("untracked", False)])
def test_dirty_counts_changes_to_tracked_files_only(tmp_path, change, dirty):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-qm", "a")
    if change == "tracked":
        (tmp_path / "a.txt").write_text("b")
    elif change == "untracked":
        (tmp_path / "result.json").write_text("{}")
    commit, is_dirty = record.git_state(tmp_path)
    assert len(commit) == 40 and is_dirty is dirty


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert record.git_state(tmp_path) == (None, None)
