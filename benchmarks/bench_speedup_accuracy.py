"""Does `--speedup S` land where asked? Measured onnxruntime CPU speedup against the request.

For each model and each requested speedup: hwprune.slim(model, x, speedup=S, target="cpu")
plans widths from this machine's latency table (measured as needed, cached), cuts and
verifies; then the original and the slim model are measured end to end, interleaved in one
run (1 intra-op thread, batch 1, 224x224, random weights). The issue's goal: measured
speedup within -7% / +25% of the request.

    python benchmarks/bench_speedup_accuracy.py [--models a,b] [--speedups 1.5,2]

Writes benchmarks/results/speedup_accuracy.json and .png (--replot redraws the plot from the JSON).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
import torchvision

import hwprune
from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.latency import local_runtime
from hwprune.hardware.measure import OrtSettings
import record

RESULTS = Path(__file__).parent / "results" / "speedup_accuracy.json"
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "regnet_y_800mf", "vit_b_16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--speedups", default="1.5,2")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--replot", action="store_true", help="only draw the plot of an existing JSON")
    args = ap.parse_args()
    if args.replot:
        return plot(record.load(args.out).results["rows"], args.out.with_suffix(".png"))
    warnings.filterwarnings("ignore")
    runtime = local_runtime(get_target("cpu"), OrtSettings(threads=1))
    how = record.capture(threads=1, batch=1, statistic=runtime.how()["statistic"], packages=("torchvision",),
                         settings=runtime.how() | {"input": [1, 3, 224, 224], "weights": "random",
                                                   "order": "original and slim interleaved in one run per request"})
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        x = (torch.randn(1, 3, 224, 224),)
        analysis = hwprune.analyze(model, x)
        for s in (float(v) for v in args.speedups.split(",")):
            t0 = time.perf_counter()
            try:
                slim, report = hwprune.slim(analysis, speedup=s, target="cpu")
            except hwprune.BudgetError as e:
                rows.append({"model": name, "requested": s, "error": str(e)})
                print(name, s, "unreachable:", e, flush=True)
                continue
            before, after = runtime.models([onnx_graph(model, x), onnx_graph(slim, x)])
            measured = before.median_ms / after.median_ms
            plan = report["plan"]
            rows.append({"model": name, "requested": s, "measured_speedup": round(measured, 4),
                         "deviation": round(measured / s - 1, 4), "within_goal": -0.07 <= measured / s - 1 <= 0.25,
                         "predicted_speedup": round(plan["predicted_before"] / plan["predicted_after"], 4),
                         "measured_ms": {"before": before.to_json(), "after": after.to_json()},
                         "params": report["params"], "macs": report["macs"],
                         "mac_reduction": round(report["macs"]["before"] / report["macs"]["after"], 4),
                         "plan_seconds": round(time.perf_counter() - t0, 1), "attempts": plan["attempts"]})
            print(name, s, {k: rows[-1][k] for k in ("measured_speedup", "predicted_speedup", "mac_reduction",
                                                    "plan_seconds")}, flush=True)
    record.write(args.out, how, {"rows": rows})
    plot(rows, args.out.with_suffix(".png"))


def plot(rows: list, path: Path) -> None:
    """Measured against requested speedup per model, with the goal's band (-7% / +25%)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if "measured_speedup" in r]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    top = max([r["requested"] for r in rows] + [2.0]) * 1.3
    grid = [1.0, top]
    ax.plot(grid, grid, "k-", lw=0.8, label="as requested")
    ax.fill_between(grid, [g * 0.93 for g in grid], [g * 1.25 for g in grid], color="0.9", label="goal: -7% / +25%")
    for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mine = [r for r in rows if r["model"] == name]
        ax.plot([r["requested"] for r in mine], [r["measured_speedup"] for r in mine], "o", color=f"C{i}", label=name)
    ax.set_xlim(1.2, top)
    ax.set_ylim(1.0, top * 1.1)
    ax.set_xlabel("requested speedup (--speedup)")
    ax.set_ylabel("measured speedup (onnxruntime CPU, 1 thread)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
