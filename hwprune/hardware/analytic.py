"""Analytic GPU latency for a target that is not attached: a conv is an implicit GEMM.

    M = N * H_out * W_out,  N = C_out / groups,  K = C_in / groups * kh * kw  (per group)

- tile quantization: the kernel computes whole tm x tn output tiles and walks K in steps of
  tk, so M, N and K are rounded up to the tile (C_out 65 costs as much as 128 with tn = 128);
- wave quantization: tiles run in waves of one tile per SM, so ceil(tiles / SMs) waves each
  cost a full tile's time (tiles 1..SMs all cost one wave);
- roofline: the time is the larger of compute (at the dense tensor-core rate) and memory
  traffic (input, weight and output once each) at the memory bandwidth;
- a fixed launch cost per kernel.

Like a cuDNN/TensorRT heuristic, the fastest tile of `tiles` is chosen. Each term is
non-decreasing in M, N and K, so the minimum is too: more channels never predict faster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
FP16_TILES = ((128, 128, 32), (128, 64, 32), (64, 64, 32), (64, 32, 32))
INT8_TILES = ((128, 128, 64), (128, 64, 64), (64, 64, 64), (64, 32, 64))


@dataclass(frozen=True)
class GpuSpec:
    name: str
    sms: int
    clock_mhz: int
    fp16_tflops: float  # dense tensor-core rate
    int8_tops: float
    bandwidth_gbs: float
    launch_us: float
    source: str

    def peak(self, precision: str) -> float:
        """Operations per second (a multiply-add is 2)."""
        return (self.int8_tops if precision == "int8" else self.fp16_tflops) * 1e12


# dense rates (sparsity doubles them on paper; pruned models are dense)
GPU_SPECS = {s.name: s for s in (
    GpuSpec("orin-nano-8gb", 8, 625, 10.0, 20.0, 68.0, 8.0, "Jetson Orin Nano 8GB datasheet (MAXN 15W)"),
    GpuSpec("orin-nano-super", 8, 1020, 16.3, 32.6, 102.0, 8.0, "Jetson Orin Nano Super (MAXN SUPER 25W)"),
    GpuSpec("orin-nx-16gb", 8, 918, 15.0, 30.0, 102.4, 8.0, "Jetson Orin NX 16GB datasheet (MAXN 25W)"),
    GpuSpec("agx-orin-64gb", 16, 1300, 42.0, 85.0, 204.8, 6.0, "Jetson AGX Orin 64GB datasheet (MAXN)"),
    GpuSpec("h100-sxm", 132, 1830, 989.0, 1979.0, 3350.0, 4.0, "NVIDIA H100 SXM5 datasheet"),
    GpuSpec("h100-pcie", 114, 1755, 756.0, 1513.0, 2000.0, 4.0, "NVIDIA H100 PCIe datasheet"),
    GpuSpec("h200-sxm", 132, 1830, 989.0, 1979.0, 4800.0, 4.0, "NVIDIA H200 SXM datasheet"),
)}


@dataclass(frozen=True)
class GemmEstimate:
    seconds: float
    compute_s: float
    memory_s: float
    tile: tuple[int, int, int]
    waves: int


def gemm_time(m: int, n: int, k: int, spec: GpuSpec, precision: str = "fp16", *, batch: int = 1,
              bytes_moved: float | None = None, tiles=None) -> GemmEstimate:
    """Seconds for `batch` independent (m x k) @ (k x n) GEMMs, the fastest tile of `tiles`.
    bytes_moved defaults to reading both operands and writing the result once."""
    size = BYTES[precision]
    if bytes_moved is None:
        bytes_moved = batch * size * (m * k + k * n + m * n)
    memory = bytes_moved / (spec.bandwidth_gbs * 1e9)
    per_sm = spec.peak(precision) / spec.sms
    best = None
    for tm, tn, tk in tiles or (INT8_TILES if precision == "int8" else FP16_TILES):
        count = batch * math.ceil(m / tm) * math.ceil(n / tn)
        waves = math.ceil(count / spec.sms)
        compute = waves * 2 * tm * tn * (math.ceil(k / tk) * tk) / per_sm
        est = GemmEstimate(max(compute, memory) + spec.launch_us * 1e-6, compute, memory, (tm, tn, tk), waves)
        if best is None or est.seconds < best.seconds:
            best = est
    return best


def conv_time(x_shape, w_shape, out_shape, groups: int, spec: GpuSpec, precision: str = "fp16",
              tiles=None) -> GemmEstimate:
    """A conv (or a linear: w of rank 2) as an implicit GEMM, one GEMM per group."""
    size = BYTES[precision]
    c_out, c_in_per_group, *kernel = w_shape
    m = math.prod(out_shape) // c_out  # N * H_out * W_out (or the rows of a linear)
    n = c_out // groups
    k = c_in_per_group * math.prod(kernel)
    moved = size * (math.prod(x_shape) + math.prod(w_shape) + math.prod(out_shape))
    return gemm_time(m, n, k, spec, precision, batch=groups, bytes_moved=moved, tiles=tiles)


def memory_time(bytes_moved: float, spec: GpuSpec) -> float:
    """An op that only moves memory (elementwise, pooling): bandwidth plus a launch."""
    return bytes_moved / (spec.bandwidth_gbs * 1e9) + spec.launch_us * 1e-6
