"""hwprune targets / profile / bench / slim --target on tiny models."""
import json

from hwprune.cli import main
from hwprune.hardware import TARGETS


def test_targets_lists_every_target(capsys, cpu_isa):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [t.name for t in TARGETS]
    assert all(r["lattice_rules"] and r["lattice"] >= 1 for r in rows)


def test_targets_table(capsys, cpu_isa):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert all(t.name in out for t in TARGETS), out  # whole names, even in CI's 80 columns
    assert "% 32" in out


# ---------------------------------------------------------------- profile, bench, slim --target

import pytest  # noqa: E402

from hwprune.hardware.lut import LatencyTable  # noqa: E402

TINY = "models_for_cli:tiny_convnet"
LATTICE = "models_for_cli:lattice_convnet"  # a ratio with a target still cuts it


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A working directory and a private latency-table cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwprune: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


@pytest.mark.host_isa  # measures this host
def test_profile_writes_a_table_and_a_staircase_png_and_resumes(here, capsys):
    from PIL import Image

    argv = ["profile", TINY, "--target", "cpu", "--out", "tiny.lut.json", "--plot", "plots", "--grid", "3"]
    assert main(argv) == 0
    table = LatencyTable.load(here / "tiny.lut.json")
    assert table.identity["target"] == "cpu" and table.calibration_points[0]["model"] == "tiny_convnet"
    assert any(e.get("sweep") for e in table.entries.values())
    png = here / "plots" / "tiny_convnet.staircase.png"
    with Image.open(png) as im:
        im.verify()
    assert "measured" in capsys.readouterr().out
    assert main(argv) == 0  # every kernel and width is in the table now
    assert "(0 measured" in " ".join(capsys.readouterr().out.split())


@pytest.mark.host_isa  # measures this host
def test_slim_target_cpu_reports_predicted_and_measured_latency(here):
    assert main(["slim", LATTICE, "--ratio", "0.5", "--target", "cpu", "--report", "r.json", "-o", "s.pt"]) == 0
    lat = json.loads((here / "r.json").read_text())["latency_ms"]
    for key in ("predicted_before", "predicted_after", "measured_before", "measured_after"):
        assert lat[key] > 0, key
    assert lat["how"]["intra_op_threads"] == 1 and "measured LUT" in lat["how"]["latency_model"]
    assert list((here / "cache").glob("lut-cpu-*.json"))  # the kernels measured are kept for next time


def test_slim_target_jetson_without_a_table_uses_the_analytic_model(here):
    assert main(["slim", LATTICE, "--ratio", "0.5", "--target", "jetson", "--report", "r.json", "-o", "s.pt"]) == 0
    lat = json.loads((here / "r.json").read_text())["latency_ms"]
    assert lat["target"] == "jetson-orin-nano" and lat["measured_before"] is None
    assert lat["how"]["latency_model"].startswith("analytic (orin-nano-8gb")
    assert lat["predicted_after"] < lat["predicted_before"]


def test_bench_measures_a_pair_in_one_run(here):
    assert main(["slim", TINY, "--ratio", "0.5", "-o", "s.pt"]) == 0
    assert main(["bench", TINY, "s.pt", "--trust-pickle", "--json", "b.json"]) == 0
    result = json.loads((here / "b.json").read_text())
    assert [m["spec"] for m in result["models"]] == [TINY, "s.pt"] and result["speedup"] > 0
    assert result["how"]["order"] == "interleaved"


@pytest.mark.parametrize("argv, fragments", [
    (["profile", TINY, "--target", "jetson"], ["profile --target jetson-orin-nano", "TensorRT", "--lut"]),
    (["slim", TINY, "--ratio", "0.5", "--target", "jetsn"], ["target 'jetsn' is unknown", "did you mean"]),
    (["slim", TINY, "--ratio", "0.5", "--lut", "x.json"], ["--lut needs --target"]),
    (["slim", TINY, "--ratio", "0.5", "--target", "cpu", "--lut", "bad.lut.json"],
     ["bad.lut.json", "not a readable latency table", "measure it again"]),
    (["slim", TINY, "--ratio", "0.5", "--target", "cpu", "--lut", "other.lut.json"],
     ["other.lut.json", "measured with runtime 'onnxruntime 0.0'", "hwprune profile"]),
    (["bench", TINY, "--target", "jetson"], ["not attached here"]),
])
def test_bad_latency_options_are_one_line_and_write_nothing(here, capsys, argv, fragments):
    (here / "bad.lut.json").write_text('{"format": "hwprune-latency-table", "version": 1, "ent')
    other = {"format": "hwprune-latency-table", "version": 1, "entries": {},
             "identity": {"target": "cpu", "runtime": "onnxruntime 0.0", "processor": "elsewhere", "isa": [],
                          "threads": 1}}
    (here / "other.lut.json").write_text(json.dumps(other))
    before = sorted(p.name for p in here.iterdir())
    assert main(argv) == 2
    _one_error_line(capsys, *fragments)
    assert sorted(p.name for p in here.iterdir()) == before
