"""The analytic GPU model against the GPU that is attached: predicted and measured conv time.

The analytic model is instantiated for the attached GPU (its spec picked by device name) and
compared with torch CUDA latency of the same convs: fp16, channels_last, cudnn.benchmark,
each conv captured in a CUDA graph and replayed, CUDA events around 50 replays, median of
20 such samples. Shapes: ResNet-like layers swept over C_out and C_in, on and off the
fp16 lattice (% 8). Reports the median and 90th-percentile relative error of the absolute
prediction and, since the planner uses differences between widths, the Spearman rank
correlation of predicted and measured times within each sweep.

    python benchmarks/bench_analytic_gpu.py      # needs CUDA; exits 0 with a note without it

Writes benchmarks/results/analytic_gpu.json.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from hwprune.hardware.analytic import GPU_SPECS, conv_time

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


def measure_conv(c_in: int, c_out: int, hw: int, k: int) -> float:
    conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False).cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(1, c_in, hw, hw, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(10):
            conv(x)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            conv(x)
        samples = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(50):
                graph.replay()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 50)
    return statistics.median(samples)


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (run this where a GPU is attached)")
        sys.exit(0)
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name()
    spec = spec_for(name)
    rows, sweeps = [], []
    for c, hw, k, other in LAYERS:
        for axis in ("c_out", "c_in"):
            sweep = []
            for w in WIDTHS(c if axis == "c_in" else other):
                c_in, c_out = (w, other) if axis == "c_in" else (c, w)
                measured = measure_conv(c_in, c_out, hw, k)
                predicted = conv_time((1, c_in, hw, hw), (c_out, c_in, k, k), (1, c_out, hw, hw), 1, spec).seconds * 1e3
                sweep.append({"c_in": c_in, "c_out": c_out, "hw": hw, "k": k, "measured_ms": measured,
                              "predicted_ms": predicted, "error": predicted / measured - 1})
            rows += sweep
            sweeps.append({"layer": [c, hw, k, other], "axis": axis,
                           "spearman": spearman([r["predicted_ms"] for r in sweep], [r["measured_ms"] for r in sweep])})
            print(sweeps[-1], flush=True)
    errs = [abs(r["error"]) for r in rows]
    result = {"gpu": name, "spec": spec.name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "how": "fp16, channels_last, cudnn.benchmark, CUDA graph replay, CUDA events, median of 20 x 50 replays",
              "median_abs_error": statistics.median(errs), "p90_abs_error": float(np.percentile(errs, 90)),
              "median_spearman": statistics.median(s["spearman"] for s in sweeps), "sweeps": sweeps, "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print({k: result[k] for k in ("gpu", "median_abs_error", "p90_abs_error", "median_spearman")})


if __name__ == "__main__":
    main()
