"""Survey: which ONNX exporter exports and checks the torchvision zoo, and how fast.

For every classification model of torchvision.models and every segmentation model (random
weights), run hwprune.export.export_onnx with the TorchScript exporter and with the dynamo
exporter, interleaved (the order alternates per model), in one process after a warm-up of
both exporters. Input 1x3x64x64 where the model allows it (ViT, Swin and MaxViT need 224,
Inception-v3 299). Results go to benchmarks/results/onnx_zoo_survey.json, model by model,
so an interrupted run resumes where it stopped.

    python benchmarks/onnx_zoo_survey.py [--models resnet18,vit_b_16] [--out FILE] [--fresh]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import record
from hwprune.export import onnx as hw_onnx

RESULTS = Path(__file__).parent / "results" / "onnx_zoo_survey.json"
SIZE_RULES = (("vit_", 224), ("swin_", 224), ("maxvit", 224), ("inception_v3", 299))


def zoo() -> list:
    """(name, kind) for every classification and segmentation model of torchvision."""
    cls = torchvision.models.list_models(module=torchvision.models)
    seg = torchvision.models.list_models(module=torchvision.models.segmentation)
    return [(n, "classification") for n in sorted(cls)] + [(n, "segmentation") for n in sorted(seg)]


def build(name: str, kind: str) -> torch.nn.Module:
    extra = {"weights_backbone": None} if kind == "segmentation" else {}
    return torchvision.models.get_model(name, weights=None, **extra).eval()


def input_size(name: str) -> int:
    return next((size for prefix, size in SIZE_RULES if name.startswith(prefix)), 64)


def export_once(model, x, exporter: str, folder: str) -> dict:
    t0 = time.perf_counter()
    try:
        r = hw_onnx.export_onnx(model, x, Path(folder) / f"{exporter}.onnx", exporter=exporter)
    except Exception as e:  # a survey records every failure and goes on
        return {"ok": False, "seconds": round(time.perf_counter() - t0, 2), "error": str(e)[:400]}
    return {"ok": True, "seconds": round(time.perf_counter() - t0, 2), "opset": r["opset"],
            "max_rel_err": r["max_rel_err"], "external_data": r["external_data"] is not None,
            "export_s": r["seconds"]["export"], "check_s": r["seconds"]["check"]}


def survey_model(name: str, kind: str, index: int) -> dict:
    torch.manual_seed(0)
    model = build(name, kind)
    size = input_size(name)
    x = torch.randn(1, 3, size, size)
    order = hw_onnx.EXPORTERS if index % 2 == 0 else hw_onnx.EXPORTERS[::-1]
    with torch.no_grad():  # an all-zero output (ViT's zero-initialized head) makes the check vacuous
        absmax = max(float(t.abs().max()) for _, t in hw_onnx.named_outputs(model(x)))
    row = {"kind": kind, "input": [1, 3, size, size],
           "params": sum(p.numel() for p in model.parameters()), "output_absmax": absmax,
           "load_avg_1min": os.getloadavg()[0]}  # the machine is shared: how busy it was
    for exporter in order:
        with tempfile.TemporaryDirectory() as folder:
            row[exporter] = export_once(model, x, exporter, folder)
        gc.collect()
    return row


def warm_up() -> None:
    """Pay each exporter's one-time import and registry cost before anything is timed."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with tempfile.TemporaryDirectory() as folder:
        for exporter in hw_onnx.EXPORTERS:
            export_once(model, torch.randn(1, 3, 8, 8), exporter, folder)


def summary(models: dict) -> dict:
    out = {}
    for exporter in (*hw_onnx.EXPORTERS, "auto"):
        rows = [_auto(m) if exporter == "auto" else m[exporter] for m in models.values()]
        secs = sorted(r["seconds"] for r in rows if r["ok"])
        out[exporter] = {
            "ok": len(secs), "failed": len(rows) - len(secs),
            "failed_models": sorted(n for n, r in zip(models, rows) if not r["ok"]),
            "total_s_ok": round(sum(secs), 1), "total_s_all": round(sum(r["seconds"] for r in rows), 1),
            "per_model_s": _distribution(secs)}
    return out


def _auto(row: dict) -> dict:
    """What exporter="auto" costs: the first exporter, plus the second where the first failed."""
    first, second = (row[e] for e in hw_onnx.EXPORTERS)
    if first["ok"]:
        return first
    return {"ok": second["ok"], "seconds": round(first["seconds"] + second["seconds"], 2)}


def _distribution(secs: list) -> dict:
    if not secs:
        return {}
    q = statistics.quantiles(secs, n=10, method="inclusive") if len(secs) > 1 else [secs[0]] * 9
    return {"min": secs[0], "p10": round(q[0], 2), "median": round(statistics.median(secs), 2),
            "p90": round(q[8], 2), "max": secs[-1]}


def how():
    """How this run is made (record.capture)."""
    return record.capture(
        threads=torch.get_num_threads(), batch=1, statistic="wall time of one export_onnx per exporter and model",
        packages=("torchvision", "onnx", "onnxscript"),
        settings={"weights": "random", "check": "onnxruntime CPUExecutionProvider ORT_ENABLE_ALL, rtol 1e-4",
                  "seconds": "wall time of export_onnx: eager run + export + onnxruntime load, run, compare",
                  "order": "exporters alternate per model, one process, after a warm-up of both",
                  "auto": "not run: computed as torchscript, plus dynamo where torchscript failed"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset of model names")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--fresh", action="store_true", help="ignore models already in --out")
    args = ap.parse_args()
    done = {} if args.fresh or not args.out.exists() else record.load(args.out).results["models"]
    made = how()
    wanted = set(args.models.split(",")) if args.models else None
    todo = [(n, k) for n, k in zoo() if (wanted is None or n in wanted) and n not in done]
    warm_up()
    for i, (name, kind) in enumerate(todo):
        done[name] = survey_model(name, kind, i)
        print(name, {e: (r["ok"], r["seconds"]) for e, r in done[name].items() if e in hw_onnx.EXPORTERS}, flush=True)
        record.write(args.out, made, {"summary": summary(done), "models": done})


if __name__ == "__main__":
    main()
