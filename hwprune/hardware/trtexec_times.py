"""Device measurements brought back: the per-iteration times that `trtexec --exportTimes=FILE`
wrote on a Jetson or GPU (`hwprune bench --trtexec-times ORIGINAL.json SLIM.json`).

trtexec writes a JSON array with one object per timed iteration (warm-up excluded):
`startEnqMs`, `endEnqMs`, `startH2dMs` ... and the intervals `h2dMs`, `computeMs`, `d2hMs`,
`latencyMs`; TensorRT 8 and earlier spelled the copies `inMs`/`outMs`, and some versions put a
`{"count": N}` object first. The figure taken is `computeMs`, the engine's GPU compute time: it
is what trtexec prints as "GPU Compute Time", what slim's trtexec command asks to be compared
with the prediction (the command runs with --noDataTransfers and CUDA graphs, so the copies are
not the model's cost), and what the analytic model predicts.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError
from .measure import Timing

FIGURE = "computeMs"
HOW = {"runtime": "TensorRT, trtexec --exportTimes (measured on the device)",
       "statistic": "median of trtexec's per-iteration GPU compute time (computeMs)",
       "order": "separate trtexec runs, one per model"}


def read_times(path: Path | str) -> Timing:
    """The engine's GPU compute time per iteration, from one --exportTimes file."""
    path = Path(path)
    hint = "give the file that `trtexec ... --exportTimes=FILE` wrote (slim prints that command)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise InputError(f"--trtexec-times {path}: no such file: {hint}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"--trtexec-times {path}: not a JSON file ({e}): {hint}") from e
    if not isinstance(data, list):
        raise InputError(f"--trtexec-times {path}: a JSON {type(data).__name__}, not the array of iterations "
                         f"that --exportTimes writes: {hint}")
    iterations = [d for d in data if isinstance(d, dict) and set(d) != {"count"}]
    ms = [d.get(FIGURE) for d in iterations]
    bad = next((i for i, v in enumerate(ms) if not _finite_time(v)), None)
    if bad is not None:
        raise InputError(f"--trtexec-times {path}: iteration {bad} has no valid {FIGURE} ({ms[bad]!r}); "
                         f"is it an --exportProfile or --exportOutput file? {hint}")
    if not ms:
        raise InputError(f"--trtexec-times {path}: no timed iterations: run trtexec longer (--duration, "
                         f"--iterations) and {hint}")
    return Timing.of([v / 1e3 for v in ms])


def _finite_time(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def bench_result(target: str, paths: list, predicted_ms: list | None = None, names: list | None = None) -> dict:
    """The result `hwprune bench` writes, from device times: one model, or the original and its
    slim version (then `speedup`, median over median). predicted_ms: the slim report's
    [predicted_before, predicted_after], compared with what the device measured; names: the
    models' specs (default: the times files)."""
    timings = [read_times(p) for p in paths]
    names = names or [str(p) for p in paths]
    result = {"target": target, "how": dict(HOW),
              "models": [{"spec": n, "times_file": str(p), **t.to_json()} for n, p, t in zip(names, paths, timings)]}
    if len(timings) == 2:
        result["speedup"] = round(timings[0].median_ms / timings[1].median_ms, 4)
    if predicted_ms is not None:
        for model, predicted in zip(result["models"], predicted_ms):
            if predicted:
                model["predicted_ms"] = round(predicted, 5)
                model["prediction_error"] = round(model["median_ms"] / predicted - 1, 4)
        if len(timings) == 2 and all(predicted_ms[:2]):
            result["predicted_speedup"] = round(predicted_ms[0] / predicted_ms[1], 4)
    return result


def predicted_from_report(path: Path | str) -> list:
    """[predicted_before, predicted_after] ms from a slim report.json (its `latency_ms`)."""
    path = Path(path)
    try:
        latency = json.loads(path.read_text()).get("latency_ms") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"--report {path}: cannot read a slim report ({e}): give the .report.json that "
                         "`hwprune slim ... --target` wrote") from e
    predicted = [latency.get("predicted_before"), latency.get("predicted_after")]
    if not all(_finite_time(v) and v > 0 for v in predicted):
        raise InputError(f"--report {path}: no predicted latency in it (latency_ms.predicted_before/after): give "
                         "the report of a slim run with --target")
    return predicted

