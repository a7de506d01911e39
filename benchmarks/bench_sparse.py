"""Block-sparse linear kernels against dense, on the CPU (always) and a CUDA GPU (where one is).

CPU: hwprune's native BSR kernel (hwprune_native::bsr_linear, as `python -m hwprune.sparse
build` compiled it) against dense torch.nn.functional.linear (MKL/oneDNN) and PyTorch's own
sparse matmuls (a BSR tensor @ x^T, a CSR tensor @ x^T), on the linears of all-MiniLM-L6-v2
and BERT-base at 128 tokens, batch 1 and 8, fp32, block 32, block sparsity 50%..95% (random
blocks, exactly that fraction zero per layer). Every contender of one (shape, batch,
sparsity) is timed in the same rounds, interleaved (the order rotates each round); each
sample is a loop of calls lasting about 20 ms; figures are the median over rounds (min and
max beside it) and are compared as ratios within the run.

GPU (--device cuda): the Triton kernel against cuBLAS fp16 (F.linear) on the same shapes and on
4096x4096, and 2:4 (torch semi-structured) against dense on large GEMMs. --dry runs that
code path on the CPU in Triton's interpreter on tiny shapes, checking results, timing nothing.

    python benchmarks/bench_sparse.py [--quick] [--threads 1] [--out benchmarks/results/sparse_cpu.json]
    python benchmarks/bench_sparse.py --device cuda [--out benchmarks/results/sparse_gpu.json]
    python benchmarks/bench_sparse.py --device cuda --dry
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import record

RESULTS = Path(__file__).parent / "results"
# (model, layer, in_features, out_features)
SHAPES = [("minilm", "attention q/k/v/o", 384, 384), ("minilm", "intermediate", 384, 1536),
          ("minilm", "output", 1536, 384), ("bert-base", "attention q/k/v/o", 768, 768),
          ("bert-base", "intermediate", 768, 3072), ("bert-base", "output", 3072, 768)]
TOKENS, BATCHES, BLOCK = 128, (1, 8), 32
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def block_sparse_weight(out_f: int, in_f: int, block: int, sparsity: float, seed: int,
                        dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A random weight with exactly round(sparsity * blocks) random B x B blocks zeroed."""
    g = torch.Generator().manual_seed(seed)
    blocks = (out_f // block) * (in_f // block)
    keep = torch.ones(blocks, dtype=torch.bool)
    keep[torch.randperm(blocks, generator=g)[:round(sparsity * blocks)]] = False
    grid = keep.view(out_f // block, in_f // block).repeat_interleave(block, 0).repeat_interleave(block, 1)
    return (torch.randn(out_f, in_f, generator=g) * grid).to(dtype=dtype, device=device)


def _sample(fn, calls: int, sync) -> float:
    sync()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t) / calls


def time_interleaved(contenders: dict, rounds: int, target_s: float = 0.02, sync=lambda: None) -> dict:
    """{name: {"median_ms", "min_ms", "max_ms"}}: per round each contender is timed once (a loop
    of about target_s), the order rotating between rounds."""
    calls = {}
    for name, fn in contenders.items():  # warm-up, and the loop length of each contender
        fn()
        once = _sample(fn, 1, sync)
        calls[name] = max(1, min(200, int(target_s / max(once, 1e-7))))
    names = list(contenders)
    samples = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(_sample(contenders[name], calls[name], sync))
    return {n: {"median_ms": statistics.median(s) * 1e3, "min_ms": min(s) * 1e3, "max_ms": max(s) * 1e3,
                "calls_per_sample": calls[n]} for n, s in samples.items()}


def cpu_contenders(x, weight, crow, col, values):
    import torch.nn.functional as F
    bsr = weight.to_sparse_bsr((BLOCK, BLOCK))
    csr = weight.to_sparse_csr()
    n = weight.shape[0]
    xt = x.t().contiguous()  # PyTorch's sparse @ dense wants the dense operand as K x M
    return {"dense": lambda: F.linear(x, weight),
            "hwprune_native_bsr": lambda: torch.ops.hwprune_native.bsr_linear(x, crow, col, values, None, n),
            "torch_bsr": lambda: bsr @ xt,
            "torch_csr": lambda: csr @ xt}


def run_cpu(args) -> dict:
    from hwprune.sparse import native
    from hwprune.sparse.bsr import to_bsr

    status = native.load()
    if not status.loaded:
        sys.exit(f"the native kernel is not built ({status.why_not}): run python -m hwprune.sparse build")
    torch.set_num_threads(args.threads)
    rows = []
    shapes = SHAPES[:2] if args.quick else SHAPES
    for model, layer, in_f, out_f in shapes:
        for batch in BATCHES:
            x = torch.randn(batch * TOKENS, in_f)
            for s in args.sparsities:
                weight = block_sparse_weight(out_f, in_f, BLOCK, s, seed=len(rows))
                crow, col, values = to_bsr(weight, BLOCK)
                fns = cpu_contenders(x, weight, crow, col, values)
                ref = fns["dense"]()
                err = float((fns["hwprune_native_bsr"]() - ref).abs().max() / ref.abs().max())
                with torch.inference_mode():
                    times = time_interleaved(fns, args.rounds)
                dense = times["dense"]["median_ms"]
                row = {"model": model, "layer": layer, "in": in_f, "out": out_f, "batch": batch,
                       "tokens": batch * TOKENS, "sparsity": s, "native_rel_err": err, "times": times,
                       "speedup_vs_dense": {k: dense / v["median_ms"] for k, v in times.items() if k != "dense"}}
                rows.append(row)
                print(f"{model:9} {layer:18} b{batch} s{s:.2f}  dense {dense:8.3f} ms  " + "  ".join(
                    f"{k} {v:5.2f}x" for k, v in row["speedup_vs_dense"].items()), flush=True)
    return {"rows": rows, "summary": summarize(rows), "native_library": status.path}


def summarize(rows: list) -> dict:
    """Per contender and sparsity, the median speedup over dense across shapes and batches (and
    the worst row for the native kernel); the lowest sparsity at which every row breaks even."""
    by_s = {}
    for r in rows:
        by_s.setdefault(r["sparsity"], []).append(r["speedup_vs_dense"])
    median = {name: {f"{s:.2f}": statistics.median(v[name] for v in vs) for s, vs in sorted(by_s.items())}
              for name in rows[0]["speedup_vs_dense"]}
    native = {s: [v["hwprune_native_bsr"] for v in vs] for s, vs in sorted(by_s.items())}
    even = [s for s, v in native.items() if min(v) >= 1.0]
    return {"median_over_dense": median,
            "native_over_dense_worst": {f"{s:.2f}": min(v) for s, v in native.items()},
            "native_rows_at_least_5x": {f"{s:.2f}": sum(x >= 5 for x in v) for s, v in native.items()},
            "rows_per_sparsity": len(next(iter(native.values()))),
            "break_even_sparsity_all_rows": even[0] if even else None}


def run_gpu(args) -> dict:
    """Triton BSR vs cuBLAS fp16, and 2:4 vs dense; --dry: the same path, interpreted, on tiny shapes."""
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --dry to exercise the GPU path in the Triton interpreter")
    from hwprune.sparse.bsr import to_bsr
    from hwprune.sparse.triton_bsr import bsr_linear_triton
    import torch.nn.functional as F

    device, dtype = ("cpu", torch.float16) if args.dry else ("cuda", torch.float16)
    sync = (lambda: None) if args.dry else torch.cuda.synchronize
    shapes = [(m, l, 64, 64) for m, l, *_ in SHAPES[:1]] if args.dry else SHAPES + [("square", "4096", 4096, 4096)]
    rows = []
    for model, layer, in_f, out_f in shapes:
        for batch in ((1,) if args.dry else BATCHES):
            tokens = 16 if args.dry else batch * TOKENS
            x = torch.randn(tokens, in_f, device=device, dtype=dtype)
            for s in ((0.5,) if args.dry else args.sparsities):
                w = block_sparse_weight(out_f, in_f, BLOCK, s, seed=len(rows), dtype=dtype, device=device)
                crow, col, values = to_bsr(w, BLOCK)
                fns = {"cublas_dense": lambda: F.linear(x, w),
                       "triton_bsr": lambda: bsr_linear_triton(x, crow, col, values, None, out_f)}
                got, want = fns["triton_bsr"]().float(), fns["cublas_dense"]().float()
                err = float((got - want).abs().max() / want.abs().max())
                row = {"model": model, "layer": layer, "in": in_f, "out": out_f, "tokens": tokens, "sparsity": s,
                       "triton_rel_err": err}
                if not args.dry:
                    row["times"] = time_interleaved(fns, args.rounds, sync=sync)
                    row["speedup_vs_dense"] = row["times"]["cublas_dense"]["median_ms"] / \
                        row["times"]["triton_bsr"]["median_ms"]
                rows.append(row)
                print(model, layer, tokens, s, {k: v for k, v in row.items() if k in ("triton_rel_err",
                                                                                    "speedup_vs_dense")}, flush=True)
    return {"rows": rows, "two_four": [] if args.dry else two_four_gpu(args, sync)}


def two_four_gpu(args, sync) -> list:
    import torch.nn.functional as F
    if torch.cuda.get_device_capability() < (8, 0):
        return [{"skipped": "2:4 needs sm80+"}]
    from torch.sparse import to_sparse_semi_structured
    from hwprune.sparse.masks import two_four_mask
    rows = []
    for m, k, n in ((4096, 4096, 4096), (8192, 4096, 11008), (1024, 3072, 768)):
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        w = w * two_four_mask(w)
        ws = to_sparse_semi_structured(w)
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        times = time_interleaved({"dense": lambda: F.linear(x, w), "semi_structured": lambda: F.linear(x, ws)},
                                 args.rounds, sync=sync)
        rows.append({"m": m, "k": k, "n": n, "times": times,
                     "speedup": times["dense"]["median_ms"] / times["semi_structured"]["median_ms"]})
    return rows


def how(args):
    """How this run is made (record.capture), before anything is measured."""
    return record.capture(
        threads=args.threads, batch=f"{', '.join(map(str, BATCHES))} sequences of {TOKENS} tokens",
        statistic="median over interleaved rounds of ~20 ms loops; ratios within the run",
        settings={"rounds": args.rounds, "dtype": "fp32 (CPU), fp16 (GPU)", "block": BLOCK,
                  "torch_inference_mode": True}, packages=("triton",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dry", action="store_true", help="GPU path on the CPU in the Triton interpreter, untimed")
    ap.add_argument("--quick", action="store_true", help="MiniLM's first two shapes only")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a shared machine)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sparsities", type=lambda t: [float(v) for v in t.split(",")], default=list(SPARSITIES))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    made = how(args)
    result = run_cpu(args) if args.device == "cpu" else run_gpu(args)
    out = args.out or (None if args.dry else RESULTS / f"sparse_{args.device}.json")
    if out is not None:
        record.write(out, made, result)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
