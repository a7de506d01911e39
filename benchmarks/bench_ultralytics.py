"""Ultralytics detectors (YOLOv8n, YOLO11n) built from their yaml, slimmed for a target, verified,
and trained one step in Ultralytics' own trainer.

Per model and target (--targets, default "jetson:2,cpu:2": a speedup of 2 on the Jetson Orin
Nano's analytic latency model and on this CPU's measured onnxruntime table), in a process of its
own: hwprune.slim(model, x, target=T, speedup=S), which verifies mask equivalence before it
returns; recorded: ok or the error, the parameter and MAC ratios kept, the plan's predicted
latencies, the frozen reasons, seconds. Then the slim model, as is, goes to Ultralytics'
DetectionTrainer for one optimizer step (one epoch of one batch) on a dataset of random images
and boxes generated into a temporary folder, and must come out with a finite loss and changed
weights.

Random weights, BN statistics calibrated on random data (tests/zoo_util.realistic), batch 1,
--imgsz (640, Ultralytics' default). Nothing downloads: YOLO_OFFLINE=1, a private settings
folder, and every socket connection and name lookup of the process refused and recorded (a
font or weight fetch shows in the result's network_attempts instead of happening).

Needs `ultralytics` (the bench extra). Writes benchmarks/results/ultralytics.json.

    nice -n 15 python benchmarks/bench_ultralytics.py
    python benchmarks/bench_ultralytics.py --models yolo11n --targets jetson:2 --out /tmp/u.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
RESULT = ROOT / "benchmarks" / "results" / "ultralytics.json"
MODELS = ("yolov8n", "yolo11n")


def offline(settings_dir: Path) -> None:
    """Before ultralytics is imported: no network, settings in a folder of our own."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(settings_dir)


NETWORK_ATTEMPTS: list = []


def refuse_network() -> None:
    """Every connection and name lookup of this process fails, and is recorded: a font or weight
    fetch shows in the result (network_attempts) instead of happening."""
    import socket

    def refused(*args, **kwargs):
        NETWORK_ATTEMPTS.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args)[:200])
        raise OSError("network refused: this benchmark runs offline")
    socket.socket.connect = socket.socket.connect_ex = refused
    socket.getaddrinfo = socket.create_connection = refused


def detector(name: str, imgsz: int):
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from zoo_util import realistic
    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml", verbose=False).eval()
    x = (torch.randn(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)),)
    realistic(model, x)
    return model, x


def synthetic_dataset(root: Path, names: dict, n: int = 4, size: int = 96) -> Path:
    """n random images per split, each with two random boxes, in Ultralytics' layout; its data.yaml."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.jpg")
            boxes = [f"{rng.integers(len(names))} {cx:.3f} {cy:.3f} {w:.3f} {h:.3f}"
                     for cx, cy, w, h in rng.uniform([0.3, 0.3, 0.1, 0.1], [0.7, 0.7, 0.4, 0.4], (2, 4))]
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(boxes) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
                    + "".join(f"  {k}: {v}\n" for k, v in names.items()))
    return data


def train_one_step(slim, name: str, work: Path) -> dict:
    """The slim model, unchanged, through DetectionTrainer: one epoch of one batch on CPU."""
    import torch
    from ultralytics.models.yolo.detect import DetectionTrainer
    t0 = time.perf_counter()
    try:
        data = synthetic_dataset(work / "data", slim.names)
        before = {k: v.detach().clone() for k, v in slim.state_dict().items() if v.is_floating_point()}
        trainer = DetectionTrainer(overrides={
            "model": f"{name}.yaml", "data": str(data), "epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu", "amp": False,
            "plots": False, "val": False, "project": str(work / "runs"), "name": "step", "exist_ok": True, "verbose": False,
            "pretrained": False, "warmup_epochs": 0})
        trainer.model = slim  # Ultralytics trains a module it is given as is (BaseTrainer.setup_model)
        trainer.train()
        items = trainer.tloss  # the mean loss items of the epoch: a tensor, or {name: value} in later releases
        items = {k: float(v) for k, v in items.items()} if isinstance(items, dict) else torch.as_tensor(items).tolist()
        values = list(items.values()) if isinstance(items, dict) else items
        finite = bool(values) and all(torch.isfinite(torch.as_tensor(v)).all() for v in values)
        trained = trainer.model.state_dict()
        moved = sum(not torch.equal(before[k], v.detach().cpu().to(before[k].dtype)) for k, v in trained.items() if k in before)
        same = {k: tuple(v.shape) for k, v in trained.items()} == {k: tuple(v.shape) for k, v in slim.state_dict().items()}
        return {"status": "ok" if finite and moved and same else "failed", "loss": items, "slim_shapes_trained": same,
                "tensors_changed": moved, "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:  # noqa: BLE001 - the error is the finding
        return {"status": "error", "error": f"{type(e).__name__}: {str(e)[:800]}",
                "where": traceback.format_exc().splitlines()[-3:-1], "seconds": round(time.perf_counter() - t0, 1)}


def one(name: str, target: str, speedup: float, imgsz: int, train: bool) -> dict:
    import torch
    from bench_timm_sweep import frozen_reasons, shapes

    import hwprune
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="hwprune-ultralytics-"))
    offline(work / "settings")
    refuse_network()
    model, x = detector(name, imgsz)
    row = {"model": name, "target": target, "speedup": speedup, "imgsz": imgsz,
           "params": sum(p.numel() for p in model.parameters())}
    t0 = time.perf_counter()
    try:
        slim, report = hwprune.slim(model, x, target=target, speedup=speedup)
    except Exception as e:  # noqa: BLE001
        row.update(status="error", error=f"{type(e).__name__}: {str(e)[:1200]}", seconds=round(time.perf_counter() - t0, 1))
        return row
    plan = report.get("plan", {})
    row.update(status="ok", seconds=round(time.perf_counter() - t0, 1),
               kept=round(report["params"]["after"] / report["params"]["before"], 4),
               macs_kept=round(report["macs"]["after"] / report["macs"]["before"], 4),
               verify={k: report["verify"].get(k) for k in ("mode", "passed", "max_rel_err", "batches")},
               plan={k: plan.get(k) for k in ("model", "full", "requested", "predicted_before", "predicted_after",
                                             "measured")},
               frozen_reasons=frozen_reasons(report))
    with torch.inference_mode():
        row["wrong"] = shapes(slim(*x)) != shapes(model(*x)) or not report["verify"]["passed"]
    if train:
        row["train_one_step"] = train_one_step(slim, name, work)
    row["network_attempts"] = NETWORK_ATTEMPTS
    return row


def child(name: str, target: str, speedup: float, args) -> dict:
    cmd = [sys.executable, __file__, "--one", f"{name}@{target}:{speedup}", "--imgsz", str(args.imgsz)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd + ([] if args.no_train else ["--train"]), capture_output=True, text=True, check=False,
                              timeout=args.timeout, env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        return {"model": name, "target": target, "speedup": speedup, "status": "timeout",
                "error": f"no result within {args.timeout} s", "seconds": round(time.perf_counter() - t0, 1)}
    last = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not last:
        return {"model": name, "target": target, "speedup": speedup, "status": "crash",
                "error": f"exit {done.returncode}: {done.stderr.strip()[-800:]}"}
    return json.loads(last[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default="jetson:2,cpu:2", help="target:speedup, comma-separated")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one model and target may take")
    ap.add_argument("--no-train", action="store_true", help="leave out the step in Ultralytics' trainer")
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        name, _, spec = args.one.partition("@")
        target, _, speedup = spec.partition(":")
        print(json.dumps(one(name, target, float(speedup), args.imgsz, args.train)))
        return
    import record
    from rich.console import Console
    console = Console(highlight=False)
    how = record.capture(threads=1, batch=1, statistic="one run per model and target", packages=("ultralytics",),
                         settings={"imgsz": args.imgsz, "targets": args.targets, "train_one_step": not args.no_train})
    rows = []
    for spec in args.targets.split(","):  # target-major: the quick analytic targets come first
        for name in args.models.split(","):
            target, _, speedup = spec.partition(":")
            rows.append(child(name, target, float(speedup or 2), args))
            record.write(args.out, how, {"rows": rows})
            r = rows[-1]
            train = r.get("train_one_step", {}).get("status", "-")
            console.print(f"{name} {spec}: {r['status']}" + (f", kept {r['kept']:.2f} of the parameters, "
                          f"{r['macs_kept']:.2f} of the MACs, {r['seconds']:.0f} s, one training step: {train}"
                          if r["status"] == "ok" else f": {r.get('error', '')[:300]}"))
    console.print(f"results in {args.out}")


if __name__ == "__main__":
    main()
