"""The READMEs' results are generated from benchmarks/results: they must not drift, and the prose
around them must not type a result.

No measuring here: the blocks are rendered from the committed JSON and compared with the
committed benchmarks/README.md and README.md. When this fails, run `python -m benchmarks readme`
and commit the READMEs (or the result that changed)."""
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import readme, record

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", readme.READMES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_committed_readme_is_what_its_results_generate(path):
    text = path.read_text()
    assert readme.generate(text) == text, f"{path} differs from its results: python -m benchmarks readme"


def test_every_table_has_one_block_in_the_readmes():
    names = [n for path in readme.READMES for n in readme.blocks(path.read_text())]
    assert sorted(names) == sorted(readme.TABLES)


# results removed from benchmarks/results as stale (docs/benchmark-notes.md says why): their last
# committed files stay here, so that their tables' code is still tested until a study remakes them
FIXTURES = Path(__file__).parent / "data" / "benchmark_results"


def source(result: str) -> Path:
    """The committed result file, or its fixture where none is committed."""
    committed = readme.RESULTS / result
    return committed if committed.is_file() else FIXTURES / result


def all_results(tmp_path) -> Path:
    """A results folder with every table's file: the committed ones, and fixtures for the rest."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for t in readme.TABLES.values():
        for f in () if t.result is None else (t.result,) if isinstance(t.result, str) else t.result:
            shutil.copy(source(f), tmp_path / f)
    return tmp_path


@pytest.mark.parametrize("name", sorted(readme.TABLES))
def test_each_table_reads_its_result_files(name, tmp_path):
    """The oracle of a table is its file: change one figure in it and the table changes with it."""
    table = readme.TABLES[name]
    text = readme.render(name, all_results(tmp_path))
    assert text.startswith(("| ", "- ")) and text.count("\n|") >= 2  # a header, its rule and at least one row
    if isinstance(table.result, str):  # one file: the block ends with how it was made
        assert text.splitlines()[-1].startswith(f"*How it was made:* [{table.result}]")


def results_of(data: dict) -> dict:
    return data["results"] if "schema" in data else data


def changed(tmp_path, result: str, path: tuple, value) -> Path:
    """A copy of the committed result file with one figure changed, in tmp_path. In `path`, a dict
    picks the list item whose fields equal it and "*" every item (rows move when a study is re-run);
    a list of paths changes each."""
    data = json.loads(source(result).read_text())
    for one in path if isinstance(path, list) else [path]:
        nodes = [results_of(data)]
        for key in one[:-1]:
            nodes = [m for n in nodes for m in (n if key == "*" else [
                next(i for i in n if key.items() <= i.items()) if isinstance(key, dict) else n[key]])]
        for n in nodes:
            n[one[-1]] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / result).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("name, path, value, shown", [
    ("speedup_accuracy", ("rows", 0, "measured_speedup"), 9.876, "9.88x"),
    ("vs_torch_pruning_auto", ("rows", 0, "hwprune", "efficiency"), 7.777, "| 7.78 / "),
    ("sparse", ("summary", "native_over_dense_worst", "0.90"), 4.321, "(4.32x)"),
    ("pass_speed", ("models", "resnet50", "ratio_hwprune_over_tp"), 9.9, "9.90x, **not met**"),
    ("minilm", ("cosine", "mean"), 0.1234, "0.123 ("),
    ("soak_random_nets", ("wall_s",), 98765.4, "| 98765 |"),
])
def test_a_changed_figure_changes_the_table(tmp_path, name, path, value, shown):
    assert shown not in readme.render(name, all_results(tmp_path / "committed"))
    assert shown in readme.render(name, changed(tmp_path, readme.TABLES[name].result, path, value))


MINILM_15 = {"model": "minilm", "requested": 1.5}


@pytest.mark.parametrize("name, path, met, met_says, missed, missed_says", [
    ("speedup_accuracy", ("rows", "*", "deviation"), 0.0, "rows, **met**", -0.5, "rows, **not met**"),
    ("latency_prediction", [("summary", "median_abs_error"), ("summary", "p90_abs_error")], 0.05,
     "p90 ≤ 20%: **met**", 0.15, "p90 ≤ 20%: **not met**"),
    ("sparse", ("summary", "median_over_dense", "hwprune_native_bsr", "0.90"), 6.0, "the rows **met**", 4.0,
     "the rows **not met**"),
    ("soak_random_nets", ("failures",), 0, "| 0: **met** |", 3, "| 3: **not met** |"),
    ("scale", ("baseline", "1.5b_fp32_ratio", "ratio"), 0.97, "0.97x its time (goal: no slower, ≤ 1.00x): **met**",
     1.03, "1.03x its time (goal: no slower, ≤ 1.00x): **not met**"),
    ("accuracy", ("rows", MINILM_15, "hwprune_data", "after_recovery", "embedding_cosine"), 0.96,
     "embedding cosine at least 0.950: **met**", 0.5, "embedding cosine at least 0.950: **not met**"),
])
def test_a_changed_figure_changes_the_verdict(tmp_path, name, path, met, met_says, missed, missed_says):
    result = readme.TABLES[name].result
    good = readme.render(name, changed(tmp_path / "met", result, path, met))
    bad = readme.render(name, changed(tmp_path / "missed", result, path, missed))
    assert met_says in good and missed_says not in good
    assert missed_says in bad and met_says not in bad


@pytest.mark.parametrize("kept, says", [(0.3, "goal 85%: **met**"), (0.9, "goal 85%: **not met**")])
def test_the_timm_verdict_is_computed_from_the_rows(tmp_path, kept, says):
    """The sweep's shares come from its rows (today's rules), not from the summary a run stored."""
    data = json.loads(source("timm_sweep.json").read_text())
    for row in results_of(data)["rows"].values():
        for run in (row.get("plain"), row.get("hidden")):
            if run and run.get("status") == "ok":
                run["kept"] = kept
    results_of(data)["summary"] = {"stale": True}
    (tmp_path / "timm_sweep.json").write_text(json.dumps(data))
    assert says in readme.render("timm_sweep", tmp_path)


@pytest.mark.parametrize("slower, says", [(1.0, "**met**"), (1.1, "**not met**")], ids=["at the latency", "slower"])
def test_a_lead_bought_with_latency_is_not_shown(slower, says):
    """hwprune's best must run at the row's latency or faster: made the clear best on every row
    (whatever the committed figures say), hwprune data meets the goal only at the row's latency."""
    from benchmarks import tables_quality
    data = results_of(json.loads(source("accuracy.json").read_text()))
    for r in data["rows"]:
        figure = tables_quality.ACCURACY_FIGURES[r["model"]][0]
        r["hwprune_data"]["after_recovery"][figure] = 1.0
        r["hwprune_data"]["after_recovery"].pop(f"{figure}_sd", None)
        r["hwprune_data"]["latency_vs_hwprune"] = slower
    line, = tables_quality.accuracy_best(data)
    assert line.startswith(f"- hwprune's best at or above every contender on every row: {says}. ")


@pytest.mark.parametrize("default, drop, says", [(1.0, False, "**met**"), (-1.0, False, "**not met**"),
                                                 (1.0, True, "**not met**")], ids=["ahead", "behind", "unmeasured"])
def test_the_default_is_judged_against_params_and_uniform_on_every_row(default, drop, says):
    from benchmarks import tables_quality
    data = results_of(json.loads(source("accuracy.json").read_text()))
    for r in data["rows"]:
        figure = tables_quality.ACCURACY_FIGURES[r["model"]][0]
        r["hwprune_default"] = json.loads(json.dumps(r["hwprune_balanced"]))
        r["hwprune_default"]["after_recovery"][figure] = default
        r["hwprune_default"]["after_recovery"].pop(f"{figure}_sd", None)
    if drop:  # a row run before the default existed: not measured, so not met
        del data["rows"][0]["hwprune_default"]
    line, = tables_quality.accuracy_default(data)
    assert line.startswith(f"- hwprune default, at or above hwprune params and uniform on every row: {says}. ")


# ---------------------------------------------------------------- pass_speed, both layouts

STAGE_S = {"check_s": 1.0, "trace_s": 2.0, "group_s": 0.5, "slim_setup_s": 0.1, "score_and_plan_s": 0.4,
           "cut_s": 1.0, "verify_s": 5.0}  # sum 10.0: each share is the seconds times 10%


def new_layout(data: dict, unverified_ratio: float, verified_ratio: float) -> dict:
    """bench_pass_speed.py's layout since it splits the pass: the unverified pass and the stages."""
    data = copy.deepcopy(data)
    for m in results_of(data)["models"].values():
        tp = m["torch_pruning"]["median_s"]
        m["hwprune"]["unverified"] = {k: tp * unverified_ratio for k in ("median_s", "min_s", "max_s")}
        m["hwprune"]["stages_median_s"] = dict(STAGE_S)
        m["ratio_unverified_over_tp"] = unverified_ratio
        m["ratio_hwprune_over_tp"] = verified_ratio
    return data


@pytest.mark.parametrize("unverified, verified, first, second", [
    (0.8, 1.9, "met", "met"), (1.2, 1.9, "not met", "met"), (0.9, 2.5, "met", "not met"),
])
def test_pass_speed_judges_both_figures_against_their_goals(tmp_path, unverified, verified, first, second):
    data = json.loads((readme.RESULTS / "pass_speed.json").read_text())
    (tmp_path / "pass_speed.json").write_text(json.dumps(new_layout(data, unverified, verified)))
    text = readme.render("pass_speed", tmp_path)
    assert f"| {unverified:.2f}x, **{first}** |" in text and f"| {verified:.2f}x, **{second}** |" in text
    assert (f"no slower than Torch-Pruning, **{first}**; the whole verified slim at most 2x it, **{second}**"
            in text)
    stages = readme.render("pass_speed_stages", tmp_path)
    assert "| 5.00 (50%) | 10.00 |" in stages and "| 1.00 (10%) | 2.00 (20%) | 0.50 (5%) |" in stages


def test_pass_speed_without_the_split_says_not_measured(tmp_path):
    data = json.loads((readme.RESULTS / "pass_speed.json").read_text())
    for m in results_of(data)["models"].values():
        m["hwprune"].pop("unverified", None), m["hwprune"].pop("stages_median_s", None)
        m.pop("ratio_unverified_over_tp", None)
    (tmp_path / "pass_speed.json").write_text(json.dumps(data))
    assert "the pass without verification no slower than Torch-Pruning, not measured" in \
        readme.render("pass_speed", tmp_path)
    assert readme.render("pass_speed_stages", tmp_path).count("not measured") == 8 * len(results_of(data)["models"])


# ---------------------------------------------------------------- provenance

HOW = {"command": "python benchmarks/bench_pass_speed.py --out x.json", "commit": "3b04e00c3cf4910ecdb03a5c89e87c2c26de4190",
       "dirty": True, "versions": {"python": "3.11.7", "torch": "2.14.1", "onnxruntime": "1.32.0",
                                   "torch-pruning": "1.6.1", "hwprune": "0.1.0", "torchvision": "0.29.1"},
       "processor": {"name": "Intel(R) Xeon(R) Processor", "isa": ["avx2", "avx512f", "fma"], "cores": 2},
       "gpu": None, "threads": 2, "started": "2026-12-01T22:28:40+00:00"}


@pytest.mark.parametrize("change, shown", [
    ({}, "commit 3b04e00, uncommitted changes, 2026-12-01T22:28:40+00:00; Intel(R) Xeon(R) Processor (AVX-512), "
         "2 cores; python 3.11.7, torch 2.14.1, onnxruntime 1.32.0, torch-pruning 1.6.1, torchvision 0.29.1; "
         "2 threads; `python benchmarks/bench_pass_speed.py --out x.json`."),
    ({"dirty": False}, "commit 3b04e00, 2026-12-01"),
    ({"processor": {"name": "AMD EPYC", "isa": ["avx", "avx2"], "cores": 16}}, "AMD EPYC (AVX2), 16 cores;"),
    ({"threads": 1}, "; 1 thread;"),
])
def test_provenance_names_commit_date_processor_versions_threads_and_command(change, shown):
    line = readme.provenance(record.Loaded(1, HOW | change, {}), "pass_speed.json")
    assert shown in line


# (the processors its parts or runs name, what the line adds to the machine)
PROCESSORS = [
    ([], "2 cores; python"),
    ([{"name": "Intel(R) Xeon(R) Processor"}], "2 cores; python"),
    ([{"name": "AMD EPYC"}], "2 cores (its parts and rows ran on 2 processors: Intel(R) Xeon(R) Processor, AMD EPYC);"),
    (["AMD EPYC", {"name": "AMD EPYC"}], "ran on 2 processors: Intel(R) Xeon(R) Processor, AMD EPYC);"),
]


@pytest.mark.parametrize("parts, shown", PROCESSORS, ids=[str(len(p[0])) for p in PROCESSORS])
def test_provenance_names_every_processor_a_merged_result_ran_on(parts, shown):
    how = HOW | {"settings": {"parts": [{"processor": p} for p in parts]}}
    assert shown in readme.provenance(record.Loaded(1, how, {"rows": []}), "accuracy.json")


def test_a_file_from_before_provenance_says_so_and_names_its_study():
    line = readme.provenance(record.Loaded(0, {"machine": {"cpu": "AMD EPYC", "cores": 2}}, {}), "pass_speed.json")
    assert "predates recorded provenance" in line and "`python -m benchmarks run pass_speed` refreshes it" in line
    assert "AMD EPYC, 2 cores" in line


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


# ---------------------------------------------------------------- no result typed by hand

# what a result looks like: a decimal speedup (1.76x), a decimal percentage (7.3%), a bare
# fraction of 3+ decimals (0.887), decimal milliseconds or gigabytes; the look-arounds keep
# versions (1.6.1, 8.4.190) and shapes (224x224, 1x3x64x64) out
RESULT_FIGURES = re.compile(r"(?<![\w.])(?:\d+\.\d+x(?![\w])|\d+\.\d+ ?%|\d+\.\d{3,}(?![\d.])|\d+\.\d+ ?(?:ms|GB|GiB)\b)")
# method figures that look like results, with why they may stay
ALLOWED = {
    "1.5x": "the requested speedup of the studies (--speedup 1.5), a setting",
    "1.15x": "the GPU run's goal (hwprune's speedup at least 1.15x Torch-Pruning's), a goal",
}
UNCHECKED = re.compile(r"<!-- BEGIN GENERATED (?P<name>[\w-]+).*?<!-- END GENERATED (?P=name) -->|```.*?```|`[^`\n]*`",
                       re.DOTALL)


def result_figures(text: str) -> list[str]:
    """Result-looking figures outside generated blocks, code fences and code spans."""
    return [f for f in RESULT_FIGURES.findall(UNCHECKED.sub(" ", text)) if f not in ALLOWED]


@pytest.mark.parametrize("path", readme.READMES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_result_is_typed_by_hand(path):
    assert result_figures(path.read_text()) == [], f"{path}: move these into a generated block or docs/benchmark-notes.md"


@pytest.mark.parametrize("text, found", [
    ("resnet50 slim 1.76x, MiniLM 2.06x", ["1.76x", "2.06x"]),
    ("median absolute error 7.3%", ["7.3%"]),
    ("MiniLM cosine 0.883 against 0.852", ["0.883", "0.852"]),
    ("median 75.1 ms, peak 18.2 GB", ["75.1 ms", "18.2 GB"]),
    ("Torch-Pruning 1.6.1, ultralytics 8.4.190, hypothesis 6.170.17", []),
    ("--speedup 1.5 at 224x224 and 1x3x64x64, at most 2x, ratio 0.25, within 2%, rtol 1e-4", []),
    ("a 1.5x cut; goal at least 1.15x", []),
    ("`resnet50 1.76x` in a code span", []),
    ("<!-- BEGIN GENERATED t: python -m benchmarks readme -->\n| 0.887 |\n<!-- END GENERATED t -->", []),
])
def test_the_guard_finds_results_and_passes_method_text(text, found):
    assert result_figures(text) == found


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


def test_a_table_whose_result_is_not_committed_says_which_study_makes_it(tmp_path):
    text = readme.render("onnx_zoo_survey", tmp_path)  # an empty results folder
    assert text == ("*Not measured on the current code:* no `results/onnx_zoo_survey.json` is committed; "
                    "`python -m benchmarks run onnx_zoo_survey` makes it.\n")


def test_the_summary_says_not_measured_for_a_result_not_committed(tmp_path):
    for f in readme.TABLES["summary"].result:
        if f != "pipeline.json":
            (tmp_path / f).write_bytes(source(f).read_bytes())
    text = readme.render("summary", tmp_path)
    assert "| Prune, then quantize (`examples/pipeline.py`) | not measured on the current code | — |" in text
    assert text.count("not measured on the current code") == 1  # the other rows still give their figures


# (the commits a result's rows name besides its own, what the summary's "measured at" says)
MEASURED = [
    ((), "1111111, 2026-12-02"),
    (("1111111",), "1111111, 2026-12-02"),
    (("2222222",), "1111111 and 1 other commit, 2026-12-02"),
    (("2222222", "3333333"), "1111111 and 2 other commits, 2026-12-02"),
]


@pytest.mark.parametrize("rows, says", MEASURED, ids=[str(len(m[0])) for m in MEASURED])
def test_measured_at_counts_the_other_commits(rows, says):
    from benchmarks.tables_summary import measured
    loaded = record.Loaded(1, {"commit": "1111111" + "0" * 33, "dirty": False, "started": "2026-12-02T10:00:00"},
                           {"rows": [{"commit": c} for c in rows]})
    assert measured(loaded) == says
