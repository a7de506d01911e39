"""hwprune.hardware.trtexec_times: device times from `trtexec --exportTimes` back into bench
results. The oracle is the median computed by hand from the iterations written."""
import json

import pytest

from hwprune.errors import InputError
from hwprune.hardware.trtexec_times import bench_result, predicted_from_report, read_times


def _iteration(compute: float, t0: float = 0.0, old_names: bool = False) -> dict:
    copy = ("in", "out") if old_names else ("h2d", "d2h")
    return {"startEnqMs": t0, "endEnqMs": t0 + 0.01, f"start{copy[0].capitalize()}Ms": t0,
            "startComputeMs": t0 + 0.02, "endComputeMs": t0 + 0.02 + compute, f"{copy[0]}Ms": 0.0,
            "computeMs": compute, f"{copy[1]}Ms": 0.0, "latencyMs": compute + 0.02}


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


# (what trtexec wrote, the median compute time by hand)
LAYOUTS = [
    pytest.param([_iteration(c, i) for i, c in enumerate([2.0, 1.0, 3.0])], 2.0, id="tensorrt-10"),
    pytest.param([_iteration(c, i, old_names=True) for i, c in enumerate([4.0, 5.0])], 4.5, id="tensorrt-8-names"),
    pytest.param([{"count": 3}] + [_iteration(c) for c in (1.0, 1.5, 9.0)], 1.5, id="leading-count"),
]


@pytest.mark.parametrize("data, median", LAYOUTS)
def test_read_times_takes_the_median_gpu_compute_time(tmp_path, data, median):
    t = read_times(_write(tmp_path, "t.json", data))
    computes = [d["computeMs"] for d in data if "computeMs" in d]
    assert t.median_ms == pytest.approx(median)
    assert (t.min_ms, t.max_ms, t.repeats) == pytest.approx((min(computes), max(computes), len(computes)))


def test_bench_result_gives_the_speedup_and_the_prediction_error(tmp_path):
    before = _write(tmp_path, "orig.json", [_iteration(c) for c in (4.0, 4.2, 3.8)])
    after = _write(tmp_path, "slim.json", [_iteration(c) for c in (2.0, 2.1, 1.9)])
    result = bench_result("jetson-orin-nano", [before, after], predicted_ms=[5.0, 2.5])
    assert result["speedup"] == pytest.approx(2.0)
    assert result["predicted_speedup"] == pytest.approx(2.0)
    assert [m["prediction_error"] for m in result["models"]] == pytest.approx([4.0 / 5.0 - 1, 2.0 / 2.5 - 1])
    assert "computeMs" in result["how"]["statistic"]
    single = bench_result("cuda", [before])
    assert "speedup" not in single and single["models"][0]["median_ms"] == pytest.approx(4.0)


# (file content, a phrase the one-line error must contain)
BAD_FILES = [
    pytest.param(None, "no such file", id="missing"),
    pytest.param("{not json", "not a JSON file", id="not-json"),
    pytest.param({"computeMs": 1.0}, "not the array of iterations", id="an-object"),
    pytest.param([], "no timed iterations", id="empty"),
    pytest.param([{"count": 0}], "no timed iterations", id="only-count"),
    pytest.param([{"name": "conv1", "timeMs": 1.0, "averageMs": 0.1}], "--exportProfile", id="a-profile"),
    pytest.param([_iteration(1.0) | {"computeMs": -1.0}], "no valid computeMs", id="negative"),
    pytest.param([_iteration(1.0) | {"computeMs": "1.0"}], "no valid computeMs", id="a-string"),
]


@pytest.mark.parametrize("content, phrase", BAD_FILES)
def test_a_bad_times_file_gets_a_one_line_error_naming_it(tmp_path, content, phrase):
    path = tmp_path / "times.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(InputError) as e:
        read_times(path)
    assert phrase in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert "exportTimes" in str(e.value)


def test_predicted_latency_comes_from_the_slim_report(tmp_path):
    report = _write(tmp_path, "r.json", {"latency_ms": {"predicted_before": 3.0, "predicted_after": 1.5}})
    assert predicted_from_report(report) == [3.0, 1.5]
    no_target = _write(tmp_path, "n.json", {"plan": {}})
    with pytest.raises(InputError, match="no predicted latency"):
        predicted_from_report(no_target)
    with pytest.raises(InputError, match="cannot read a slim report"):
        predicted_from_report(_write(tmp_path, "bad.json", "[1, 2"))


def test_bench_cli_reads_device_times_and_the_reports_prediction(tmp_path, capsys):
    from hwprune.cli import main
    before = _write(tmp_path, "orig.times.json", [_iteration(c) for c in (6.0, 6.2, 5.8)])
    after = _write(tmp_path, "slim.times.json", [_iteration(c) for c in (3.0, 3.1, 2.9)])
    report = _write(tmp_path, "slim.report.json", {"latency_ms": {"predicted_before": 5.0, "predicted_after": 2.0}})
    out = tmp_path / "bench.json"
    # the models are only named: neither file exists, and nothing is loaded
    assert main(["bench", "resnet18.pt", "resnet18.slim.pt", "--target", "jetson", "--trtexec-times", before, after,
                 "--report", report, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [m["spec"] for m in result["models"]] == ["resnet18.pt", "resnet18.slim.pt"]
    assert [m["times_file"] for m in result["models"]] == [before, after]
    assert result["speedup"] == pytest.approx(2.0) and result["predicted_speedup"] == pytest.approx(2.5)
    assert [m["prediction_error"] for m in result["models"]] == pytest.approx([0.2, 0.5])
    assert "speedup 2.000x" in capsys.readouterr().out


# (arguments after `bench`, a phrase of the one-line error)
BAD_BENCH = [
    pytest.param(["a.pt", "b.pt", "--target", "jetson", "--trtexec-times", "{t}"], "1 file(s) for 2 model(s)",
                 id="one-file-two-models"),
    pytest.param(["a.pt", "--target", "cpu", "--trtexec-times", "{t}"], "trtexec times are a GPU target's",
                 id="cpu-target"),
    pytest.param(["a.pt", "--target", "jetson", "--report", "{t}"], "give --trtexec-times too", id="report-alone"),
    pytest.param(["a.pt", "--target", "jetson", "--trtexec-times", "{missing}"], "no such file", id="missing-file"),
]


@pytest.mark.parametrize("argv, phrase", BAD_BENCH)
def test_bench_cli_device_times_errors(tmp_path, capsys, argv, phrase):
    from hwprune.cli import main
    times = _write(tmp_path, "t.json", [_iteration(1.0)])
    argv = [a.format(t=times, missing=str(tmp_path / "none.json")) for a in argv]
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and phrase in err[0]
