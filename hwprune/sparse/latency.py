"""Latency of one linear layer in each form the per-layer planner weighs, by target.

A latency model is a function (kind, tokens, in, out, keep) -> ms, kind one of "dense",
"width" (a dense layer of round(keep * out) outputs), "bsr" (keep of the B x B blocks stored),
"2:4". Which model a target gets is the first row of SOURCES that applies to it:
- `cpu`: measured here, one thread, medians, cached per shape: F.linear for dense and width,
  the native BSR kernel for bsr, a layer's forms interleaved; 2:4 has no CPU kernel, so it costs what
  dense costs;
- a GPU target whose GPU is attached (a Jetson target only on an Orin): measured on it with
  CUDA events in fp16: cuBLAS through F.linear, the Triton BSR kernel, torch's semi-structured
  2:4 kernels on sm80+ (dense elsewhere);
- any other GPU target: hwprune.hardware.analytic's roofline of its GpuSpec. Dense and width
  are GEMMs (tokens x out x in). BSR is a GEMM over the kept blocks only: every B-wide block row
  of the output runs keep * in of the inputs, in output tiles one block wide (tn = tk = B), and
  moves the input, the kept blocks with their column indices, and the output once; it assumes
  the Triton kernel reaches the dense tensor-core rate on those tiles, which a measurement may
  not confirm. 2:4 halves K (sparse tensor cores run twice the dense rate on paper) and moves
  half the weight plus 2 bits of index per kept weight.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..hardware import analytic

LatencyModel = Callable[[str, int, int, int, float], float]


def _rows(kind: str, out_f: int, keep: float) -> int:
    return max(1, round(out_f * keep)) if kind == "width" else out_f


def _bsr_weight(out_f: int, in_f: int, block: int, keep: float, device="cpu", dtype=torch.float32) -> tuple:
    """A BSR triple with round(keep * blocks) blocks stored, at seeded random positions."""
    from .bsr import to_bsr

    g = torch.Generator().manual_seed(0)
    grid_shape = (out_f // block, in_f // block)
    order = torch.randperm(math.prod(grid_shape), generator=g)[:max(1, round(keep * math.prod(grid_shape)))]
    grid = torch.zeros(math.prod(grid_shape), dtype=torch.bool)
    grid[order] = True
    w = torch.randn(out_f, in_f, generator=g) * grid.view(grid_shape).repeat_interleave(block, 0) \
        .repeat_interleave(block, 1)
    return tuple(t.to(device) if i < 2 else t.to(device, dtype) for i, t in enumerate(to_bsr(w, block)))


class MeasuredCpuLatency:
    """Latency on this CPU, one thread; cached per shape. `sweep` times a layer's forms
    interleaved (A B C A B C ...), so that a machine whose load drifts during the sweep moves
    them alike (hwprune's MEASURING.md), each call repeated to at least 2 ms, median of `rounds`."""

    def __init__(self, block: int = 32, rounds: int = 7):
        from . import native
        self.block, self.rounds, self.native = block, rounds, native.status().loaded
        self.cache: dict = {}

    def key(self, kind: str, tokens: int, in_f: int, out_f: int, keep: float) -> tuple:
        if kind == "2:4" or (kind == "bsr" and not self.native):
            kind, keep = "dense", 1.0  # no CPU kernel of its own: it runs, and is timed, as the dense layer
        return (kind, tokens, in_f, out_f, keep)

    def _call(self, kind: str, tokens: int, in_f: int, out_f: int, keep: float):
        x = torch.randn(tokens, in_f)
        if kind == "bsr":
            crow, col, values = _bsr_weight(out_f, in_f, self.block, keep)
            return lambda: torch.ops.hwprune.bsr_linear(x, crow, col, values, None, out_f)
        w = torch.randn(_rows(kind, out_f, keep), in_f)  # dense, or width: a narrower dense layer
        return lambda: F.linear(x, w)

    def sweep(self, forms: list) -> list:
        """ms of each (kind, tokens, in, out, keep) of `forms`."""
        keys = [self.key(*f) for f in forms]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            calls, reps, samples = {}, {}, {k: [] for k in todo}
            for k in todo:
                calls[k] = self._call(*k)
                t = time.perf_counter()
                calls[k]()  # warm-up, and how many calls make 2 ms
                reps[k] = max(1, math.ceil(2e-3 / max(time.perf_counter() - t, 1e-7)))
            for _ in range(self.rounds):
                for k in todo:
                    t = time.perf_counter()
                    for _ in range(reps[k]):
                        calls[k]()
                    samples[k].append((time.perf_counter() - t) / reps[k])
        finally:
            torch.set_num_threads(threads)
        self.cache.update({k: statistics.median(v) * 1e3 for k, v in samples.items()})
        return [self.cache[k] for k in keys]

    def __call__(self, kind: str, tokens: int, in_f: int, out_f: int, keep: float) -> float:
        return self.sweep([(kind, tokens, in_f, out_f, keep)])[0]


def measured_cpu_latency(block: int = 32, rounds: int = 7) -> LatencyModel:
    """Latency on this CPU (MeasuredCpuLatency): a latency model with an interleaved `sweep`."""
    return MeasuredCpuLatency(block, rounds)


def measured_gpu_latency(block: int = 32, rounds: int = 50, dtype=torch.float16) -> LatencyModel:
    """Latency on the attached CUDA GPU in `dtype`: CUDA events around `rounds` calls after a
    warm-up (the first call of a Triton configuration autotunes), median; cached per shape."""
    cache: dict = {}
    device = torch.device("cuda")

    def median_ms(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def form(kind: str, x: torch.Tensor, in_f: int, out_f: int, keep: float):
        if kind == "bsr":
            crow, col, values = _bsr_weight(out_f, in_f, block, keep, device, dtype)
            return lambda: torch.ops.hwprune.bsr_linear(x, crow, col, values, None, out_f)
        w = torch.randn(_rows(kind, out_f, keep), in_f, device=device, dtype=dtype)
        if kind == "2:4" and torch.cuda.get_device_capability() >= (8, 0):
            from torch.sparse import to_sparse_semi_structured

            from .masks import two_four_mask
            try:
                sparse = to_sparse_semi_structured(w * two_four_mask(w))
            except (RuntimeError, ValueError):  # a shape its kernels refuse runs, and costs, as dense
                return lambda: F.linear(x, w)
            return lambda: F.linear(x, sparse)
        return lambda: F.linear(x, w)

    def latency(kind: str, tokens: int, in_f: int, out_f: int, keep: float) -> float:
        key = (kind, tokens, in_f, out_f, keep)
        if key not in cache:
            x = torch.randn(tokens, in_f, device=device, dtype=dtype)
            with torch.inference_mode():
                cache[key] = median_ms(form(kind, x, in_f, out_f, keep))
        return cache[key]
    return latency


def analytic_latency(spec: analytic.GpuSpec, precision: str = "fp16", block: int = 32) -> LatencyModel:
    """The roofline estimate of each form on a GPU that is not attached (see the module's doc)."""
    size = analytic.BYTES[precision]

    def latency(kind: str, tokens: int, in_f: int, out_f: int, keep: float) -> float:
        if kind == "bsr":
            k = max(block, math.ceil(keep * in_f / block) * block)  # the kept inputs of a block row, on average
            kept = keep * out_f * in_f
            moved = size * (tokens * in_f + kept + tokens * out_f) + 8 * kept / block ** 2
            tiles = tuple((tm, block, block) for tm in (128, 64, 32))
            est = analytic.gemm_time(tokens, out_f, k, spec, precision, bytes_moved=moved, tiles=tiles)
        elif kind == "2:4":
            moved = size * (tokens * in_f + out_f * in_f / 2 + tokens * out_f) + out_f * in_f / 8
            est = analytic.gemm_time(tokens, out_f, in_f // 2, spec, precision, bytes_moved=moved)
        else:
            est = analytic.gemm_time(tokens, _rows(kind, out_f, keep), in_f, spec, precision)
        return est.seconds * 1e3
    return latency


def gpu_attached(target) -> bool:
    """A CUDA GPU is here, and it is the target's: a Jetson target needs an Orin."""
    if target.gpu is None or not torch.cuda.is_available():
        return False
    return "orin" in torch.cuda.get_device_name().lower() if target.name.startswith("jetson") else True


@dataclass(frozen=True)
class LatencySource:
    name: str                                        # what the report says the figures are
    applies: Callable[[object], bool]                # to a hwprune.hardware.targets.Target
    build: Callable[[object, int], LatencyModel]     # (target, block) -> latency model


SOURCES: tuple[LatencySource, ...] = (
    LatencySource("measured on this CPU: F.linear and the native BSR kernel, 1 thread, interleaved, medians",
                  lambda t: t.local, lambda t, block: measured_cpu_latency(block)),
    LatencySource("measured on the attached GPU with CUDA events, fp16: cuBLAS, the Triton BSR kernel, "
                  "semi-structured 2:4 on sm80+", gpu_attached, lambda t, block: measured_gpu_latency(block)),
    LatencySource("analytic: roofline of the target's GPU spec, BSR as a GEMM over the kept blocks",
                  lambda t: t.gpu is not None,
                  lambda t, block: analytic_latency(analytic.GPU_SPECS[t.gpu], t.precision, block)),
)


def latency_for(target, block: int) -> tuple[LatencyModel, str]:
    """(latency model, where its figures come from) for a hwprune Target."""
    source = next(s for s in SOURCES if s.applies(target))  # every target is the CPU or names a GPU spec
    name = source.name if source.applies is not gpu_attached else f"{source.name} ({torch.cuda.get_device_name()})"
    return source.build(target, block), name
