"""The GPU run (benchmarks/gpu/run.sh): one prepared script for an H100 or H200, within 8 minutes.

Parts, in order, each with its own time budget (items left when it runs out are listed as
skipped), the JSON rewritten after each part so that a run cut short keeps what it measured:
- bsr: the Triton BSR kernel (hwprune/sparse/triton_bsr.py) against dense fp16 F.linear
  (cuBLAS) at 90% block sparsity on MiniLM's and BERT-base's linear shapes and 4096x4096;
- analytic: the analytic latency model instantiated for the attached GPU against torch CUDA
  latency (fp16, channels_last, cudnn.benchmark, CUDA graphs, CUDA events; batch 1 and 32) on a
  conv sweep (bench_analytic_gpu's), a linear sweep, and six zoo models. Goal: median error
  at most 15%;
- slim: hwprune.slim(model, x, speedup=S, target="cuda") for S = 1.5 and 2, planned at batch 32,
  against Torch-Pruning (MetaPruner, L2, round_to=8, classifier left whole) with its ratio
  bisected to hwprune's MACs; the original and both slim models timed interleaved on the GPU at
  batch 1 and 32. Goal: hwprune's measured speedup at least 1.15x Torch-Pruning's.

--dry runs the same code on the CPU with tiny sizes and no CUDA: results are checked (the
Triton kernel in its interpreter against the dense product), plans and Torch-Pruning's
bisection are made, and every CUDA timing is recorded as skipped, with "dry": true.

    benchmarks/gpu/run.sh [--dry] [--out FILE] [--parts bsr,analytic,slim]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the studies' modules, as when they run as scripts

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_pruning as tp  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402

import hwprune  # noqa: E402
import record  # noqa: E402
from bench_analytic_gpu import WIDTHS, graph_ms, measure_conv, spec_for, sweep_points  # noqa: E402
from bench_sparse import BLOCK, SHAPES, block_sparse_weight, time_interleaved  # noqa: E402
from hwprune.export.onnx import onnx_graph  # noqa: E402
from hwprune.hardware import get_target  # noqa: E402
from hwprune.hardware.analytic import GPU_SPECS, conv_time, gemm_time  # noqa: E402
from hwprune.hardware.latency import AnalyticLatency  # noqa: E402
from hwprune.sparse.bsr import to_bsr  # noqa: E402

RESULTS = HERE.parent / "results" / "gpu.json"
GOAL_ERROR, GOAL_VS_TP = 0.15, 1.15
ZOO = ("resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "regnet_y_800mf", "vit_b_16")
# (tokens per sequence, in_features, out_features): ViT-B/16's MLP and BERT-base's, swept over the hidden width
LINEARS = ((197, 768, 3072), (128, 768, 3072))


@dataclass(frozen=True)
class Sizes:
    """What one run covers; FULL on the GPU, DRY on the CPU."""
    dry: bool
    batches: tuple[int, ...]
    conv_layers: tuple  # bench_analytic_gpu.LAYERS form
    linears: tuple
    zoo: tuple[tuple[str, int], ...]  # (model, input side)
    slim_models: tuple[tuple[str, int], ...]
    plan_batch: int
    speedups: tuple[float, ...]
    bsr_shapes: tuple  # (name, in_features, out_features)
    bsr_tokens: tuple[int, ...]
    sparsity: float
    budget_s: dict  # per part
    samples: int = 15
    replays: int = 30


FULL = Sizes(dry=False, batches=(1, 32), conv_layers=None, linears=LINEARS,
             zoo=tuple((m, 224) for m in ZOO), slim_models=tuple((m, 224) for m in ZOO), plan_batch=32,
             speedups=(1.5, 2.0), bsr_shapes=None, bsr_tokens=(128, 1024), sparsity=0.9,
             budget_s={"bsr": 45, "analytic": 170, "slim": 190})
DRY = Sizes(dry=True, batches=(1, 2), conv_layers=((16, 8, 3, 16),), linears=((4, 64, 128),),
            zoo=(("tiny_cnn", 16),), slim_models=(("tiny_cnn", 16),), plan_batch=1, speedups=(1.25,),
            bsr_shapes=(("tiny", 64, 64),), bsr_tokens=(16,), sparsity=0.5,
            budget_s={"bsr": 3600, "analytic": 3600, "slim": 3600})  # no cut: a dry run must cover every item


class Clock:
    """A part's budget: items are started only while time is left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


# ---------------------------------------------------------------- models

def tiny_cnn():
    """The dry run's stand-in for a zoo model, at 16x16: its 512-channel convs (K = 4608) cost the
    analytic model several times their launch even in one wave of tiles, while a CPU runs it in
    tens of milliseconds."""
    layers, c = [], 3
    for width in (64, 512, 512, 512):
        layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def build(name: str):
    torch.manual_seed(0)
    model = tiny_cnn() if name == "tiny_cnn" else torchvision.models.get_model(name, weights=None)
    return model.eval()


def classifier(model):
    """The last linear: the logits, which no tool may cut."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def on_gpu(model, batch: int, side: int):
    """(fp16 channels_last model on the GPU, its input)."""
    model = model.cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, side, side, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    return model, x


def timed(models: list, batch: int, side: int, sizes: Sizes) -> list[dict] | None:
    """The models timed interleaved in CUDA graphs at `batch`; None in a dry run."""
    if sizes.dry:
        return None
    placed = [on_gpu(m, batch, side) for m in models]
    return graph_ms([(lambda m=m, x=x: m(x)) for m, x in placed], sizes.samples, sizes.replays)


# ---------------------------------------------------------------- parts

def part_bsr(sizes: Sizes, clock: Clock, spec, into: dict) -> None:
    from hwprune.sparse.triton_bsr import bsr_linear_triton
    device = "cpu" if sizes.dry else "cuda"
    shapes = sizes.bsr_shapes or tuple((f"{m} {layer}", i, o) for m, layer, i, o in SHAPES) + (("square", 4096, 4096),)
    rows, skipped = into.setdefault("rows", []), into.setdefault("skipped", [])
    for name, in_f, out_f in shapes:
        for tokens in sizes.bsr_tokens:
            if not clock.left():
                skipped.append(f"{name} x{tokens}")
                continue
            x = torch.randn(tokens, in_f, device=device, dtype=torch.float16)
            w = block_sparse_weight(out_f, in_f, BLOCK, sizes.sparsity, seed=len(rows), dtype=torch.float16,
                                    device=device)
            crow, col, values = to_bsr(w, BLOCK)
            fns = {"dense_fp16": lambda: F.linear(x, w),
                   "triton_bsr": lambda: bsr_linear_triton(x, crow, col, values, None, out_f)}
            got, want = fns["triton_bsr"]().float(), (x.float() @ w.float().t())
            row = {"shape": name, "in": in_f, "out": out_f, "tokens": tokens, "sparsity": sizes.sparsity,
                   "rel_err": float((got - want).abs().max() / want.abs().max())}
            if not sizes.dry:
                row["times"] = time_interleaved(fns, 7, sync=torch.cuda.synchronize)
                row["speedup_vs_dense"] = row["times"]["dense_fp16"]["median_ms"] / row["times"]["triton_bsr"]["median_ms"]
            rows.append(row)
            print("bsr", {k: row.get(k) for k in ("shape", "tokens", "rel_err", "speedup_vs_dense")}, flush=True)
    speedups = [r["speedup_vs_dense"] for r in rows if "speedup_vs_dense" in r]
    into |= {"block": BLOCK,
            "median_speedup_vs_dense": statistics.median(speedups) if speedups else None,
            "max_rel_err": max((r["rel_err"] for r in rows), default=None)}


def part_analytic(sizes: Sizes, clock: Clock, spec, into: dict) -> None:
    """Whole models first (the check the planner relies on), then the conv and linear sweeps."""
    rows, skipped = into.setdefault("rows", []), into.setdefault("skipped", [])
    for kind, items_of in ANALYTIC_ITEMS.items():
        for batch in sizes.batches:
            for label, predict, measure in items_of(sizes, batch, spec):
                if not clock.left():
                    skipped.append(f"{kind} {label} b{batch}")
                    continue
                row = {"kind": kind, "item": label, "batch": batch}
                try:
                    row["predicted_ms"] = predict()
                    if not sizes.dry:
                        row["measured_ms"] = measure()
                        row["error"] = row["predicted_ms"] / row["measured_ms"] - 1
                except Exception as e:  # noqa: BLE001 - recorded; the next item still runs
                    row["failed"] = f"{type(e).__name__}: {e}"
                rows.append(row)
            print("analytic", kind, f"batch {batch}:", sum(r["kind"] == kind and r["batch"] == batch for r in rows),
                  "items", flush=True)
    into["summary"] = error_summary(rows)


def conv_items(sizes: Sizes, batch: int, spec):
    points = sweep_points(sizes.conv_layers) if sizes.conv_layers else sweep_points()
    for layer, axis, c_in, c_out, hw, k in points:
        yield (f"{c_in}->{c_out} k{k} {hw}x{hw} ({axis} sweep)",
               lambda c_in=c_in, c_out=c_out, hw=hw, k=k: conv_time(
                   (batch, c_in, hw, hw), (c_out, c_in, k, k), (batch, c_out, hw, hw), 1, spec).seconds * 1e3,
               lambda c_in=c_in, c_out=c_out, hw=hw, k=k: measure_conv(c_in, c_out, hw, k, batch, sizes.samples,
                                                                       sizes.replays))


def linear_items(sizes: Sizes, batch: int, spec):
    for tokens, in_f, out_f in sizes.linears:
        m = tokens * batch
        for n in WIDTHS(out_f):
            yield (f"{m}x{in_f} @ {in_f}x{n}", lambda m=m, n=n, k=in_f: gemm_time(m, n, k, spec).seconds * 1e3,
                   lambda m=m, n=n, k=in_f: measure_linear(m, k, n, sizes))


def measure_linear(m: int, k: int, n: int, sizes: Sizes) -> float:
    x = torch.randn(m, k, device="cuda", dtype=torch.half)
    w = torch.randn(n, k, device="cuda", dtype=torch.half)
    return graph_ms([lambda: F.linear(x, w)], sizes.samples, sizes.replays)[0]["median_ms"]


def model_items(sizes: Sizes, batch: int, spec):
    for name, side in sizes.zoo:
        yield (name, lambda name=name, side=side: predicted_model_ms(build(name), batch, side, spec),
               lambda name=name, side=side: timed([build(name)], batch, side, sizes)[0]["median_ms"])


def predicted_model_ms(model, batch: int, side: int, spec) -> float:
    lm = AnalyticLatency(spec, "fp16")
    return lm.predict(lm.blocks(onnx_graph(model, (torch.randn(batch, 3, side, side),)))).total_ms


ANALYTIC_ITEMS = {"model": model_items, "conv": conv_items, "linear": linear_items}  # (label, predict, measure)


def error_summary(rows: list) -> dict:
    out = {}
    for kind in ("conv", "linear", "model", "all"):
        errs = [abs(r["error"]) for r in rows if "error" in r and kind in ("all", r["kind"])]
        if errs:
            out[kind] = {"points": len(errs), "median_abs_error": statistics.median(errs),
                         "max_abs_error": max(errs)}
    if "all" in out:
        out["goal"] = f"median absolute error <= {GOAL_ERROR:.0%}"
        out["goal_met"] = out["all"]["median_abs_error"] <= GOAL_ERROR
    return out


def part_slim(sizes: Sizes, clock: Clock, spec, into: dict) -> None:
    rows, skipped = into.setdefault("rows", []), into.setdefault("skipped", [])
    for name, side in sizes.slim_models:
        x = (torch.randn(sizes.plan_batch, 3, side, side),)
        for s in sizes.speedups:
            if not clock.left():
                skipped.append(f"{name} {s:g}x")
                continue
            try:
                rows.append(slim_row(name, side, x, s, sizes))
            except hwprune.BudgetError as e:
                rows.append({"model": name, "requested": s, "unreachable": str(e)})
            except Exception as e:  # noqa: BLE001 - recorded; the next model still runs
                rows.append({"model": name, "requested": s, "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()})
            print("slim", name, s, {k: v for k, v in rows[-1].items() if k not in ("model", "requested")}, flush=True)
    into |= {"goal": f"hwprune's measured speedup >= {GOAL_VS_TP}x Torch-Pruning's",
             "planned_for": get_target("cuda").to_json(), "planned_with": planned_with()}


def planned_with() -> str:
    """What slim(target="cuda") priced kernels with here: the runtime that measures `cuda` on this
    machine (TensorRT, else torch CUDA; kernels measured as the planner asks), else the analytic model."""
    from hwprune.hardware.latency import local_runtime
    runtime = local_runtime(get_target("cuda"))
    return "analytic model" if runtime is None else f"measured: {runtime.how()['runtime']}"


def slim_row(name: str, side: int, x: tuple, s: float, sizes: Sizes) -> dict:
    model = build(name)
    t0 = time.perf_counter()
    slim, report = hwprune.slim(model, x, speedup=s, target="cuda")
    row = {"model": name, "requested": s, "plan_batch": sizes.plan_batch,
           "plan_seconds": round(time.perf_counter() - t0, 1),
           "predicted_speedup": report["plan"]["predicted_before"] / report["plan"]["predicted_after"],
           "hwprune_macs": report["macs"],
           "plan": {k: v for k, v in report["plan"].items() if isinstance(v, (int, float, str, bool))}}
    tp_model, row["torch_pruning"] = tp_at_macs(build(name), x, report["macs"]["after"] / report["macs"]["before"])
    return row | measured_speedups([model, slim, tp_model], side, sizes)


def measured_speedups(models: list, side: int, sizes: Sizes) -> dict:
    out = {}
    for batch in sizes.batches:
        times = timed(models, batch, side, sizes)
        if times is None:
            out[f"batch_{batch}"] = {"skipped": "dry run: no CUDA timing"}
            continue
        orig, hw, tp = (t["median_ms"] for t in times)
        out[f"batch_{batch}"] = {"ms": {"original": times[0], "hwprune": times[1], "torch_pruning": times[2]},
                                 "hwprune_speedup": orig / hw, "torch_pruning_speedup": orig / tp,
                                 "vs_torch_pruning": tp / hw, "goal_met": tp / hw >= GOAL_VS_TP}
    return out


def tp_at_macs(model, x: tuple, mac_fraction: float, steps: int = 10, tol: float = 0.02):
    """Torch-Pruning's model whose MACs (hwprune's count, at batch 1) are closest to
    `mac_fraction` of the original's: its ratio bisected, at most `steps` tries (all recorded;
    round_to=8 moves a narrow net's MACs in steps, so `equal_macs` says whether one came
    within `tol`)."""
    x1 = tuple(t[:1] for t in x)
    base = macs_of(model, x1)
    lo, hi, best, tries = 0.0, 0.95, None, []
    for _ in range(steps):
        ratio = (lo + hi) / 2
        m = copy.deepcopy(model)
        heads = {a: a.num_heads for a in m.modules() if isinstance(a, nn.MultiheadAttention)}
        tp.pruner.MetaPruner(m, x1, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
                             round_to=8, ignored_layers=[classifier(m)], num_heads=heads).step()
        fraction = macs_of(m, x1) / base
        tries.append({"ratio": round(ratio, 4), "mac_fraction": fraction})
        if best is None or abs(fraction - mac_fraction) < abs(best[1]["mac_fraction"] - mac_fraction):
            best = (m, {"ratio": round(ratio, 4), "mac_fraction": fraction, "target_mac_fraction": mac_fraction})
        if abs(fraction / mac_fraction - 1) <= tol:
            break
        lo, hi = (ratio, hi) if fraction > mac_fraction else (lo, ratio)
    model, info = best
    info |= {"equal_macs": abs(info["mac_fraction"] / mac_fraction - 1) <= tol, "tries": tries,
             "config": "MetaPruner(MagnitudeImportance(p=2), round_to=8, classifier ignored, num_heads of each MHA)"}
    return model, info


def macs_of(model, x: tuple) -> int:
    return hwprune.analyze(model, x).to_json()["macs"]


PARTS = {"bsr": part_bsr, "analytic": part_analytic, "slim": part_slim}


# ---------------------------------------------------------------- the run

def attached_spec(dry: bool):
    if dry:
        return GPU_SPECS["h200-sxm"]
    return spec_for(torch.cuda.get_device_name())


def nvidia_smi() -> str | None:
    """The GPU's clocks and power limit as the driver reports them (MEASURING.md: clocks stated)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit,"
                               "driver_version", "--format=csv"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="the same code on the CPU, tiny sizes, no CUDA timing")
    ap.add_argument("--out", type=Path, help="the JSON (default: benchmarks/results/gpu.json; gpu_dry.json in a "
                                             "temporary folder with --dry)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := [p for p in parts if p not in PARTS]:
        ap.error(f"--parts {args.parts}: no part {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    if not args.dry and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run benchmarks/gpu/run.sh --dry to check the code path on the CPU")
    warnings.filterwarnings("ignore")
    torch.backends.cudnn.benchmark = True
    sizes = DRY if args.dry else FULL
    out = args.out or (Path(tempfile.mkdtemp(prefix="hwprune-gpu-")) / "gpu_dry.json" if args.dry
                       else RESULTS)
    spec = attached_spec(args.dry)
    how = record.capture(threads=torch.get_num_threads(), batch=", ".join(map(str, sizes.batches)),
                         statistic=f"median of {sizes.samples} samples of {sizes.replays} CUDA graph replays "
                                   "(CUDA events), models interleaved",
                         packages=("torchvision", "triton"),
                         settings={"dry": sizes.dry, "dtype": "fp16", "layout": "channels_last", "cudnn_benchmark": True,
                                   "analytic_spec": spec.name, "nvidia_smi": nvidia_smi(),
                                   "budget_s": sizes.budget_s, "target": "cuda"})
    results = {"dry": sizes.dry, "spec": spec.name, "parts": {}}
    for name in parts:
        t0 = time.perf_counter()
        into = results["parts"][name] = {}  # filled as the part goes: a run cut short keeps its rows
        try:
            PARTS[name](sizes, Clock(sizes.budget_s[name]), spec, into)
        except KeyboardInterrupt:  # run.sh's timeout: keep what was measured, then stop
            into |= {"interrupted": "timeout", "seconds": round(time.perf_counter() - t0, 1)}
            record.write(out, how, results)
            print(f"interrupted in part {name}; wrote {out}", flush=True)
            return 124
        except Exception as e:  # noqa: BLE001 - one part's failure must not lose the others' figures
            into |= {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(f"part {name} failed: {type(e).__name__}: {e}", flush=True)
        into["seconds"] = round(time.perf_counter() - t0, 1)
        record.write(out, how, results)
    print(f"wrote {out}")
    return 1 if any("error" in p for p in results["parts"].values()) else 0

if __name__ == "__main__":
    sys.exit(main())
