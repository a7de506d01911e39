"""Latency models: a model's predicted time as the sum of its kernels plus an overhead term.

Two families, one interface (`kernel_ms(block) -> (ms, source)`, `predict(blocks)`):
- MeasuredLatency: a LatencyTable. On the machine the target runs on (`cpu` here), a kernel
  missing from the table is measured and added; elsewhere (a table imported from a Jetson)
  it is interpolated from the kernel's channel sweeps, and a kernel with neither is an error.
- AnalyticLatency: hwprune.hardware.analytic for a GPU that is not attached.

A kernel's time is measured in a session of its own, from onnxruntime's profiler: the
kernel's nodes only, without the per-run overhead and the layout reorders that running it
alone adds. The sum of kernel times is still not the model time (the executor, memory
traffic between kernels): the end-to-end prediction is `scale * sum + offset`, fitted on
whole models (LatencyTable.calibration), and always reported beside a measurement where
one can be made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import analytic
from .blocks import Block, channels, onnx_blocks, runtime_graph, with_channels
from .lut import Calibration, LatencyTable, LatencyTableError, default_path
from .measure import OrtRuntime, OrtSettings

FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}  # views: no kernel


@dataclass(frozen=True)
class KernelTime:
    name: str
    desc: str
    ms: float
    source: str  # measured | table | interpolated | analytic


@dataclass(frozen=True)
class Prediction:
    total_ms: float
    kernels_ms: float
    kernels: tuple
    model: str  # where the figures come from
    calibration: dict

    def to_json(self, top: int = 0) -> dict:
        out = {"total_ms": round(self.total_ms, 4), "kernels_ms": round(self.kernels_ms, 4),
               "model": self.model, "calibration": self.calibration,
               "sources": {s: sum(k.source == s for k in self.kernels) for s in sorted({k.source for k in self.kernels})}}
        if top:
            worst = sorted(self.kernels, key=lambda k: -k.ms)[:top]
            out["slowest"] = [{"name": k.name, "kernel": k.desc, "ms": round(k.ms, 4), "source": k.source}
                              for k in worst]
        return out


class MeasuredLatency:
    def __init__(self, table: LatencyTable, runtime=None, *, source: str = "measured LUT", progress=None):
        """runtime: what measures missing kernels (OrtRuntime, TensorRTRuntime); None for a
        table imported from another machine, which interpolates instead."""
        self.table, self.runtime = table, runtime
        self.source, self.progress = source, progress

    def blocks(self, graph) -> list[Block]:
        """The kernels of an ONNX graph as this table's runtime runs them."""
        ort = str(self.table.identity.get("runtime", "")).startswith("onnxruntime")
        return onnx_blocks(runtime_graph(graph) if ort else graph)

    def kernel_ms(self, block: Block) -> tuple[float, str]:
        entry = self.table.get(block.key)
        if entry is not None:
            return entry["ms"], "table"
        if self.runtime is not None:
            return self.measure_block(block)["ms"], "measured"
        ms = self._interpolated(block)
        if ms is None:
            raise LatencyTableError(
                f"the latency table {self.table.path} has no time for kernel {block.describe()} and no sweep "
                "to interpolate it from: run `hwprune profile` for this model on the target device")
        return ms, "interpolated"

    def measure_block(self, block: Block, sweep: str | None = None, chans=None) -> dict:
        timing = self.runtime.kernel(block)
        record = {"ops": block.ops, "desc": block.describe(), "ms": round(timing.median_ms, 5),
                  "min_ms": round(timing.min_ms, 5), "max_ms": round(timing.max_ms, 5), "repeats": timing.repeats}
        if sweep is not None:
            record |= {"sweep": sweep, "channels": list(chans)}
        self.table.put(block.key, record)
        return record

    def _interpolated(self, block: Block) -> float | None:
        ch = channels(block)
        if ch is None:
            return None
        points = self.table.sweep(sweep_key(block))
        return separable(points, ch.c_in, ch.c_out, coupled=ch.coupled)

    def predict(self, blocks) -> Prediction:
        kernels = []
        for i, b in enumerate(blocks):
            if self.progress is not None:
                self.progress("latency", i, len(blocks))
            ms, source = (0.0, "free") if b.ops in FREE_OPS else self.kernel_ms(b)
            kernels.append(KernelTime(b.name, b.describe(), ms, source))
        cal = self.table.calibration()
        return _prediction(kernels, cal, self.source)


class AnalyticLatency:
    def __init__(self, spec: analytic.GpuSpec, precision: str = "fp16"):
        self.spec, self.precision = spec, precision

    def kernel_ms(self, block: Block) -> tuple[float, str]:
        lead = block.nodes[0]
        size = analytic.BYTES[self.precision]
        variable = [t for t in block.inputs if not t.constant]
        if lead.op_type == "Conv":
            w = next(t for t in block.inputs if t.name == lead.input[1])
            groups = next((a.i for a in lead.attribute if a.name == "group"), 1) or 1
            est = analytic.conv_time(variable[0].shape, w.shape, block.outputs[0].shape, groups, self.spec,
                                     self.precision)
            extra = sum(math.prod(t.shape) for t in variable[1:]) * size  # a fused residual operand
            return (est.seconds + extra / (self.spec.bandwidth_gbs * 1e9)) * 1e3, "analytic"
        if lead.op_type in ("Gemm", "MatMul") and len(variable) >= 1:
            a = variable[0].shape
            b = next((t.shape for t in block.inputs if t.name == lead.input[1]), None)
            if b is not None and len(b) >= 2:
                k, n = (b[-1], b[-2]) if any(x.name == "transB" and x.i for x in lead.attribute) else (b[-2], b[-1])
                batch = math.prod(b[:-2]) if len(b) > 2 else 1
                m = math.prod(a[:-1]) // batch if len(b) > 2 else math.prod(a[:-1])
                return analytic.gemm_time(m, n, k, self.spec, self.precision, batch=batch).seconds * 1e3, "analytic"
        moved = sum(math.prod(t.shape) for t in [*variable, *block.outputs]) * size
        return analytic.memory_time(moved, self.spec) * 1e3, "analytic"

    def blocks(self, graph) -> list[Block]:
        return onnx_blocks(graph)

    def predict(self, blocks) -> Prediction:
        kernels = [KernelTime(b.name, b.describe(), 0.0 if b.ops in FREE_OPS else self.kernel_ms(b)[0], "analytic")
                   for b in blocks]
        return _prediction(kernels, Calibration(1.0, 0.0, 0),
                           f"analytic ({self.spec.name}, {self.precision}: {self.spec.source})")


def in_place(lm, graph, blocks) -> dict[str, float]:
    """{block name: ms} of each kernel measured inside the whole model, where the target runs
    here; {} elsewhere. A kernel timed alone keeps its weights in cache from run to run; in
    a model the kernels before it have pushed them out, and more so the larger they are
    (MiniLM: a 384x1536 linear 18% slower in place, a 384x384 one 5%), which timed alone
    would price wide layers too cheap against narrow ones. Matched by node name, or by output
    name + `_nchwc` where onnxruntime rewrote the node into its blocked layout."""
    runtime = getattr(lm, "runtime", None)
    if not isinstance(lm, MeasuredLatency) or not callable(getattr(runtime, "nodes", None)):
        return {}
    nodes = runtime.nodes(graph)
    out = {}
    for b in blocks:
        names = dict.fromkeys([n.name for n in b.nodes] + [f"{o}_nchwc" for n in b.nodes for o in n.output])
        hits = [nodes[name] for name in names if name in nodes]
        if hits:
            out[b.name] = sum(hits)
    return out


def _prediction(kernels: list, cal: Calibration, source: str) -> Prediction:
    raw = sum(k.ms for k in kernels)
    return Prediction(cal.apply(raw), raw, tuple(kernels), source, cal.to_json())


def sweep_key(block: Block) -> str:
    """The kernel with its channel counts left out: what every width of one layer shares."""
    return with_channels(block, 0, 0).key


def separable(points: list, c_in: int, c_out: int, full: tuple[int, int] | None = None,
              coupled: bool = False) -> float | None:
    """t(C_in, C_out) from the two sweeps through a full width (C_in0, C_out0):
    t(a, b) ~ t_in(a) * t_out(b) / t_out(C_out0), where t_in and t_out are straight lines
    fitted to the sweeps by least squares. A line, not the points joined: single kernel
    times scatter by 10% from one measurement to the next, and a planner that trusts each
    point buys the dips, which are noise. A sweep key's points are one kernel at other
    channel counts, whichever layer they were measured for: `full` names the corner (the
    layer's own widths); without it, the narrowest measured corner at or above the query
    whose sweeps exist. None without such a corner. `coupled` (a depthwise conv, whose C_in
    is its C_out): one sweep along the diagonal."""
    if not points:
        return None
    times = {(a, b): ms for a, b, ms in points}
    if coupled:
        diagonal = [(a, ms) for (a, b), ms in times.items() if a == b]
        return _line(diagonal, c_out) if len(diagonal) > 1 else None

    def lines(corner):
        a0, b0 = corner
        along_out = [(b, ms) for (a, b), ms in times.items() if a == a0 and b <= b0]
        along_in = [(a, ms) for (a, b), ms in times.items() if b == b0 and a <= a0]
        usable = corner in times and (len(along_out) > 1 or c_out == b0) and (len(along_in) > 1 or c_in == a0)
        return (along_out, along_in) if usable else None

    if full is None:
        if (c_in, c_out) in times and not any(a > c_in or b > c_out for a, b in times):
            return times[(c_in, c_out)]
        full = min(((a, b) for a, b in times if a >= c_in and b >= c_out and lines((a, b))),
                   key=lambda c: c[0] * c[1], default=None)
    found = lines(full) if full is not None else None
    if found is None:
        return times.get((c_in, c_out))
    along_out, along_in = found
    return _line(along_in, c_in) * _line(along_out, c_out) / _line(along_out, full[1])


def _line(points: list, x: float) -> float:
    """The least-squares line through (width, ms) points, at x; never falling with the width
    nor below a tenth of the smallest time measured. One point: its time."""
    xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    if len(points) < 2 or np.ptp(xs) == 0:
        return float(ys.mean())
    slope, intercept = np.polyfit(xs, ys, 1)
    if slope <= 0:  # wider is never faster: a fall is noise
        return float(ys.mean())
    return float(max(slope * x + intercept, ys.min() * 0.1))


# ---------------------------------------------------------------- per target

def gpu_runtimes() -> dict:
    """The GPU runtimes by the name --runtime takes, in the order local_runtime prefers them:
    name -> (module with attached(target) and its runtime class, what to do where it is absent)."""
    from . import tensorrt, torch_cuda
    return {"tensorrt": (tensorrt, tensorrt.TensorRTRuntime,
                         "install TensorRT (pip install tensorrt) on a machine with an NVIDIA GPU"),
            "torch": (torch_cuda, torch_cuda.TorchCudaRuntime,
                      "run on a machine with an NVIDIA GPU and torch built with CUDA (fp16 targets only)")}


GPU_RUNTIMES = ("tensorrt", "torch")


def local_runtime(target, settings: OrtSettings | None = None, choice: str | None = None):
    """What measures `target` on this machine, or None where it is not attached: onnxruntime
    for cpu; for a GPU target TensorRT where installed and attached, else torch CUDA where a
    CUDA GPU is attached. `choice` (a GPU_RUNTIMES name) insists on one, or fails saying why."""
    if target.local:
        if choice is not None:
            raise InputError(f"--runtime {choice} with --target {target.name}: {target.name} is measured with "
                             f"{target.runtime}; drop --runtime, or choose a GPU target")
        return OrtRuntime(target, settings or OrtSettings())
    runtimes = gpu_runtimes()
    if choice is not None:
        if choice not in runtimes:
            raise InputError(f"--runtime {choice}: unknown; choose one of {', '.join(runtimes)}")
        module, cls, todo = runtimes[choice]
        if not module.attached(target):
            raise InputError(f"--runtime {choice} cannot measure --target {target.name} here: {todo}, "
                             "or drop --runtime")
        return cls(target)
    for module, cls, _ in runtimes.values():
        if module.attached(target):
            return cls(target)
    return None


def open_table(target, runtime, lut: str | None = None, *, create: bool = False) -> LatencyTable:
    """The table for `target`: the file given, else (where `runtime` measures the target
    here) this machine's cache. A cache, or with `create` the file given, starts empty."""
    if runtime is not None:
        identity = runtime.identity()
        path = Path(lut) if lut else default_path(identity)
        if path.exists() or (lut is not None and not create):
            return LatencyTable.load(path, expect=identity)
        table = LatencyTable(identity, runtime.how(), path=path)
        table.overhead_ms = runtime.overhead_ms()
        return table
    if lut is None:
        raise LatencyTableError(f"target {target.name} is not attached here: give --lut FILE measured on the "
                                "device, or use its analytic model")
    return LatencyTable.load(lut, expect={"target": target.name})


def latency_model(target, *, lut: str | None = None, runtime=None, progress=None):
    """The latency model `target` uses here: a table measured here or imported with --lut,
    else the analytic model."""
    if runtime is not None or lut is not None:
        table = open_table(target, runtime, lut)
        source = "measured LUT (this machine)" if runtime is not None else f"imported LUT {lut}"
        return MeasuredLatency(table, runtime, source=source, progress=progress)
    if target.gpu is None:
        raise LatencyTableError(f"target {target.name} has neither a local runtime nor an analytic model")
    return AnalyticLatency(analytic.GPU_SPECS[target.gpu], target.precision)
