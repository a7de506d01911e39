"""Predicted against measured onnxruntime CPU latency, for torchvision models at random
lattice widths.

For each model: the original and `--configs` random width configurations, each width drawn
from the cpu target's lattice candidates of its group (a quarter of the width up to all of
it), cut with hwprune.slim(widths=...). Each is exported to ONNX, predicted from the
per-kernel latency table (kernels measured alone, as `hwprune profile` does), and measured
end to end; a model's configurations are measured interleaved in one run.

The end-to-end overhead term (scale * kernel sum + offset) is fitted leave-one-model-out:
the figures for a model use a calibration fitted on the other models only, so no model is
predicted with its own measurements. The uncalibrated error (scale 1, offset = one run's
overhead) is reported beside it.

    python benchmarks/bench_latency_prediction.py [--models a,b] [--configs 3] [--threads 1]

Writes benchmarks/results/latency_prediction.json and latency_prediction.png.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision

import hwprune
from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.latency import MeasuredLatency, local_runtime
from hwprune.hardware.lut import LatencyTable, fit_calibration
from hwprune.hardware.measure import OrtSettings
import record

RESULTS = Path(__file__).parent / "results"
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
          "regnet_y_400mf", "shufflenet_v2_x1_0", "convnext_tiny")


def random_widths(analysis, lattice, rng: random.Random) -> dict:
    return {g.id: rng.choice(lattice.candidates(g.width)) for g in analysis.prunable if g.width >= 2}


def configs_of(name: str, n: int, seed: int, lattice):
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = (torch.randn(1, 3, 224, 224),)
    analysis = hwprune.analyze(model, x)
    rng = random.Random(f"{name}-{seed}")
    out = [("original", model)]
    for i in range(n):
        slim, _ = hwprune.slim(model, x, widths=random_widths(analysis, lattice, rng))
        out.append((f"random{i}", slim))
    return x, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "latency_prediction.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    target = get_target("cpu")
    settings = OrtSettings(threads=args.threads)
    runtime = local_runtime(target, settings)
    table = LatencyTable(runtime.identity(), runtime.how(), path=Path("/tmp/hwprune-bench-lut.json"))
    table.overhead_ms = runtime.overhead_ms()
    lm = MeasuredLatency(table, runtime)
    how = record.capture(
        threads=args.threads, batch=1, statistic=settings.how()["statistic"], packages=("torchvision",),
        settings=settings.how() | {"runtime": table.identity["runtime"], "input": [1, 3, 224, 224],
                                   "weights": "random", "configs_per_model": args.configs, "seed": args.seed,
                                   "calibration": "leave-one-model-out least squares of measured on kernel sum",
                                   "order": "a model's configurations interleaved in one run"})
    rows = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        x, configs = configs_of(name, args.configs, args.seed, target.lattice)
        graphs = [onnx_graph(m, x) for _, m in configs]
        kernels = [lm.predict(lm.blocks(g)).kernels_ms for g in graphs]
        timings = runtime.models(graphs)
        for (label, m), k, t in zip(configs, kernels, timings):
            rows.append({"model": name, "config": label, "params": sum(p.numel() for p in m.parameters()),
                         "kernels_ms": round(k, 4), "measured_ms": round(t.median_ms, 4),
                         "measured": t.to_json()})
        print(f"{name}: {[(r['config'], r['kernels_ms'], r['measured_ms']) for r in rows[-len(configs):]]} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = evaluate(rows, table.overhead_ms)
    record.write(args.out, how, {"overhead_ms": table.overhead_ms, "summary": summary, "rows": rows})
    plot(rows, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


def evaluate(rows: list, overhead_ms: float) -> dict:
    for r in rows:
        others = [(o["kernels_ms"], o["measured_ms"]) for o in rows if o["model"] != r["model"]]
        cal = fit_calibration(others, overhead_ms)
        r["predicted_ms"] = round(cal.apply(r["kernels_ms"]), 4)
        r["calibration"] = cal.to_json()
        r["error"] = round(r["predicted_ms"] / r["measured_ms"] - 1, 4)
        r["error_uncalibrated"] = round((r["kernels_ms"] + overhead_ms) / r["measured_ms"] - 1, 4)
    errs = [abs(r["error"]) for r in rows]
    raw = [abs(r["error_uncalibrated"]) for r in rows]
    return {"points": len(rows), "models": len({r["model"] for r in rows}),
            "median_abs_error": round(statistics.median(errs), 4),
            "p90_abs_error": round(float(np.percentile(errs, 90)), 4),
            "max_abs_error": round(max(errs), 4),
            "uncalibrated_median_abs_error": round(statistics.median(raw), 4),
            "uncalibrated_p90_abs_error": round(float(np.percentile(raw, 90)), 4),
            "goal": "median <= 10%, p90 <= 20%",
            "goal_met": statistics.median(errs) <= 0.10 and float(np.percentile(errs, 90)) <= 0.20}


def plot(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    for name in dict.fromkeys(r["model"] for r in rows):
        pts = [(r["measured_ms"], r["predicted_ms"]) for r in rows if r["model"] == name]
        ax.scatter(*zip(*pts), label=name, s=18)
    hi = max(max(r["measured_ms"], r["predicted_ms"]) for r in rows) * 1.1
    lo = min(min(r["measured_ms"], r["predicted_ms"]) for r in rows) / 1.1
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="gray", alpha=0.15, label="±10%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured end to end (ms, median)")
    ax.set_ylabel("predicted (ms, leave-one-model-out calibration)")
    ax.set_title("onnxruntime CPU, 1 thread, batch 1, 224x224", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
