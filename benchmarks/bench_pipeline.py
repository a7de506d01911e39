"""Prune, then quantize: CPU latency after each stage of examples/pipeline.py, in one run.

For resnet50 (quantize_static, QDQ, 16 random calibration batches) and the MiniLM sentence
encoder (quantize_dynamic, 128 tokens): original, slim (hwprune.SlimPass(target="cpu",
speedup=1.5)), slim + INT8 and original + INT8, each an ONNX file, timed in onnxruntime
(CPUExecutionProvider, ORT_ENABLE_ALL, 1 intra-op thread, batch 1) interleaved in one run.

    python benchmarks/bench_pipeline.py [--models resnet50,minilm]

Writes benchmarks/results/pipeline.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import pipeline  # noqa: E402  (examples/pipeline.py)
import record  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,minilm")
    ap.add_argument("--speedup", type=float, default=1.5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    how = record.capture(threads=1, batch=1, statistic="median (min-max) of the four stages' runs, interleaved",
                         settings={"runtime": "onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL",
                                   "speedup": args.speedup, "stages": list(pipeline.STAGES)},
                         packages=("torchvision", "transformers", "onnx"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hwprune-pipeline-") as tmp:
        for name in args.models.split(","):
            t0 = time.perf_counter()
            row = pipeline.run(name, Path(tmp), speedup=args.speedup)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            for s in row["stages"]:
                print(f"{name:<9} {s['stage']:<16} {s['median_ms']:9.3f} ms ({s['min_ms']:.3f}-{s['max_ms']:.3f}) "
                      f"{s['speedup']:.2f}x  {s['agreement_with_original']}", flush=True)
    record.write(args.out, how, {"rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
