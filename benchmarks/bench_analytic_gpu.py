"""The analytic GPU model against the GPU that is attached: predicted and measured conv time.

The analytic model is instantiated for the attached GPU (its spec picked by device name) and
compared with torch CUDA latency of the same convs: fp16, channels_last, cudnn.benchmark,
each conv captured in a CUDA graph and replayed, CUDA events around 50 replays, median of
20 such samples. Shapes: ResNet-like layers swept over C_out and C_in, on and off the
fp16 lattice (% 8). Reports the median and 90th-percentile relative error of the absolute
prediction and, since the planner uses differences between widths, the Spearman rank
correlation of predicted and measured times within each sweep.

    python benchmarks/bench_analytic_gpu.py [--out FILE]   # needs CUDA; exits 0 with a note without it

Writes benchmarks/results/analytic_gpu.json. benchmarks/gpu/run.sh reuses its timing and sweeps
(graph_ms, sweep_points) for convs, linears and whole models at batch 1 and 32.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

import record
from hwprune.hardware.analytic import GPU_SPECS, conv_time
from hwprune.hardware.torch_cuda import CudaSettings, time_fns

RESULTS = Path(__file__).parent / "results" / "analytic_gpu.json"
# (input C, H=W, kernel, fixed other width) for sweeps of C_out and C_in
LAYERS = [(64, 56, 3, 64), (128, 28, 3, 128), (256, 14, 3, 256), (512, 7, 3, 512), (256, 56, 1, 64)]
WIDTHS = lambda c: sorted({*range(c // 4, c + 1, max(c // 16, 8)), *range(c - 7, c + 1)})  # noqa: E731


def spec_for(name: str):
    lowered = name.lower()
    if "h200" in lowered:
        return GPU_SPECS["h200-sxm"]
    if "h100" in lowered:
        return GPU_SPECS["h100-pcie" if "pcie" in lowered else "h100-sxm"]
    if "orin" in lowered:
        return GPU_SPECS["orin-nano-8gb"]
    raise SystemExit(f"no analytic spec for GPU {name!r}: add one to hwprune/hardware/analytic.py")


def graph_ms(fns: list, samples: int = 20, replays: int = 50) -> list[dict]:
    """Each fn captured in a CUDA graph after 10 warm-up calls (cudnn.benchmark picks its
    algorithms there), then timed interleaved (A B C A B C ...): per fn the median, min and max
    over `samples` samples, each CUDA events around `replays` replays; `eager` where capture
    failed. hwprune's torch-CUDA runtime (hwprune/hardware/torch_cuda.py) times the same way."""
    with torch.inference_mode():
        timings, eager = time_fns(fns, CudaSettings(rounds=samples, replays=replays, warmup=10))
    return [dataclasses.asdict(t) | ({"eager": True} if i in eager else {}) for i, t in enumerate(timings)]


def measure_conv(c_in: int, c_out: int, hw: int, k: int, batch: int = 1, samples: int = 20, replays: int = 50) -> float:
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False).cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, c_in, hw, hw, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    return graph_ms([lambda: conv(x)], samples, replays)[0]["median_ms"]


def sweep_points(layers=LAYERS):
    """(layer, axis, c_in, c_out, hw, k) of every conv of the sweeps, sweep by sweep."""
    for c, hw, k, other in layers:
        for axis in ("c_out", "c_in"):
            for w in WIDTHS(c if axis == "c_in" else other):
                c_in, c_out = (w, other) if axis == "c_in" else (c, w)
                yield (c, hw, k, other), axis, c_in, c_out, hw, k


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (run this where a GPU is attached)")
        sys.exit(0)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    spec = spec_for(name)
    how = record.capture(threads=None, batch=1, statistic="median of 20 samples of 50 CUDA graph replays",
                         settings={"dtype": "fp16", "layout": "channels_last", "cudnn_benchmark": True,
                                   "cudnn": torch.backends.cudnn.version(), "spec": spec.name})
    rows, sweeps, sweep = [], [], []
    for layer, axis, c_in, c_out, hw, k in sweep_points():
        measured = measure_conv(c_in, c_out, hw, k)
        predicted = conv_time((1, c_in, hw, hw), (c_out, c_in, k, k), (1, c_out, hw, hw), 1, spec).seconds * 1e3
        sweep.append({"c_in": c_in, "c_out": c_out, "hw": hw, "k": k, "axis": axis, "layer": list(layer),
                      "measured_ms": measured, "predicted_ms": predicted, "error": predicted / measured - 1})
    for layer, axis in dict.fromkeys((tuple(r["layer"]), r["axis"]) for r in sweep):
        mine = [r for r in sweep if tuple(r["layer"]) == layer and r["axis"] == axis]
        rows += mine
        sweeps.append({"layer": list(layer), "axis": axis,
                       "spearman": spearman([r["predicted_ms"] for r in mine], [r["measured_ms"] for r in mine])})
        print(sweeps[-1], flush=True)
    errs = [abs(r["error"]) for r in rows]
    result = {"gpu": name, "spec": spec.name,
              "median_abs_error": statistics.median(errs), "p90_abs_error": float(np.percentile(errs, 90)),
              "median_spearman": statistics.median(s["spearman"] for s in sweeps), "sweeps": sweeps, "rows": rows}
    record.write(args.out, how, result)
    print({k: result[k] for k in ("gpu", "median_abs_error", "p90_abs_error", "median_spearman")})


if __name__ == "__main__":
    main()
