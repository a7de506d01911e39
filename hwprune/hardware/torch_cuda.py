"""torch-CUDA timing, for `hwprune profile|bench --target cuda` where a CUDA GPU is attached
and TensorRT is not installed.

A kernel's (or a whole model's) ONNX graph is run as torch ops (a registry from ONNX op to
torch call, below) in the target's precision (fp16), channels_last, cudnn.benchmark on. Each
is captured in a CUDA graph after a warm-up (cudnn picks its algorithms there), so that a
replay carries no launch jitter; where capture fails it is timed eagerly, and how() says so.
Times are CUDA events around `replays` replays, one sample per model per round, models
interleaved (A B A B ...), the median over rounds kept beside min and max.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import HwpruneError
from .measure import Timing

DTYPES = {"fp16": "float16", "fp32": "float32"}


def available() -> bool:
    """A CUDA GPU is here (torch is always installed with hwprune; TensorRT's check adds its own import)."""
    import torch
    return torch.cuda.is_available()


def attached(target) -> bool:
    """A GPU target other than a Jetson's, in a precision torch runs (not int8), with a CUDA GPU here."""
    return target.gpu is not None and not target.name.startswith("jetson") and target.precision in DTYPES \
        and available()


@dataclass(frozen=True)
class CudaSettings:
    rounds: int = 30  # samples per model, the median kept
    replays: int = 20  # replays (or eager runs) per sample: CUDA events resolve ~0.5 us
    warmup: int = 10


# ---- ONNX ops as torch calls: (torch inputs, attributes) -> output(s) ----

def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(xs, a):
    import torch.nn.functional as F
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    pads = a.get("pads", [0] * (2 * (x.dim() - 2)))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        raise HwpruneError(f"Conv with asymmetric pads {pads} has no torch-CUDA form here: time it with TensorRT")
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    return conv(x, w, b, a.get("strides", 1), pads[:half], a.get("dilations", 1), a.get("group", 1))


def _gemm(xs, a):
    x, w = xs[0], xs[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * xs[2] if len(xs) > 2 and xs[2] is not None else y


def _pool(kind):
    def run(xs, a):
        import torch.nn.functional as F
        pads = a.get("pads", [0, 0, 0, 0])
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        return fn(xs[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]), pads[:2],
                  ceil_mode=bool(a.get("ceil_mode", 0)))
    return run


def _batchnorm(xs, a):
    import torch.nn.functional as F
    return F.batch_norm(xs[0], xs[3], xs[4], xs[1], xs[2], False, 0.0, a.get("epsilon", 1e-5))


def _layernorm(xs, a):
    import torch.nn.functional as F
    axis = a.get("axis", -1) % xs[0].dim()
    shape = xs[0].shape[axis:]
    return F.layer_norm(xs[0], shape, xs[1], xs[2] if len(xs) > 2 else None, a.get("epsilon", 1e-5))


# Shapes, axes and bounds are read on the host from the graph's constants (a["host"]), never
# from the device: a device read syncs, which CUDA graph capture forbids.

def _reshape(xs, a):
    shape = [int(s) for s in a["host"][1]]
    shape = [xs[0].shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return xs[0].reshape(shape)


def _flatten(xs, a):
    axis = a.get("axis", 1)
    return xs[0].reshape(int(np.prod(xs[0].shape[:axis])), -1)


def _clip(xs, a):
    host = a["host"] + [None, None]
    lo = float(host[1]) if host[1] is not None else a.get("min")
    hi = float(host[2]) if host[2] is not None else a.get("max")
    return xs[0].clamp(lo, hi)


def _reduce_mean(xs, a):
    axes = a.get("axes", [int(v) for v in a["host"][1]] if len(xs) > 1 else None)
    return xs[0].mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _torch(name):
    def run(xs, a):
        import torch
        return getattr(torch, name)(*xs)
    return run


def _f(name, **fixed):
    def run(xs, a):
        import torch.nn.functional as F
        return getattr(F, name)(xs[0], **fixed)
    return run


def _gather(xs, a):
    x, idx, axis = xs[0], xs[1], a.get("axis", 0) % xs[0].dim()
    picked = x.index_select(axis, idx.reshape(-1) % x.shape[axis])  # ONNX allows negative indices
    return picked.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


def _unsqueeze(xs, a):
    y = xs[0]
    axes = a.get("axes", [int(v) for v in a["host"][1]] if len(xs) > 1 else [])
    for axis in sorted(v % (y.dim() + len(axes)) for v in axes):
        y = y.unsqueeze(axis)
    return y


def _slice(xs, a):
    host = a["host"] + [None] * 5
    starts, ends = host[1], host[2]
    axes = host[3] if host[3] is not None else range(len(starts))
    steps = host[4] if host[4] is not None else [1] * len(starts)
    index = [slice(None)] * xs[0].dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))
    return xs[0][tuple(index)]


def _cast(xs, a):
    import torch
    to = onnx.helper.tensor_dtype_to_np_dtype(a["to"])
    if np.dtype(to).kind == "f":  # floats stay in the runtime's precision
        return xs[0].to(a["dtype"])
    return xs[0].to(torch.from_numpy(np.zeros(1, to)).dtype)


OPS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _torch("matmul"),
    "Add": _torch("add"), "Sub": _torch("sub"), "Mul": _torch("mul"), "Div": _torch("div"),
    "Relu": _f("relu"), "Sigmoid": _torch("sigmoid"), "Tanh": _torch("tanh"), "Erf": _torch("erf"),
    "HardSigmoid": lambda xs, a: (xs[0] * a.get("alpha", 0.2) + a.get("beta", 0.5)).clamp(0, 1),
    "HardSwish": _f("hardswish"), "Gelu": _f("gelu"), "Sqrt": _torch("sqrt"), "Pow": _torch("pow"),
    "Clip": _clip, "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda xs, a: xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True),
    "ReduceMean": _reduce_mean, "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": lambda xs, a: xs[0].permute(*a["perm"]),
    "Softmax": lambda xs, a: xs[0].softmax(a.get("axis", -1)),
    "Concat": lambda xs, a: __import__("torch").cat(xs, a["axis"]),
    "Identity": lambda xs, a: xs[0], "Dropout": lambda xs, a: xs[0],
    "Gather": _gather, "Where": _torch("where"), "Cast": _cast, "Unsqueeze": _unsqueeze, "Slice": _slice,
    "Neg": _torch("neg"), "Exp": _torch("exp"), "Equal": _torch("eq"), "Not": _torch("logical_not"),
}


class OnnxModule:
    """An ONNX graph run as torch ops on `device` in `dtype`: float weights cast to it,
    integer constants (shapes, axes, indices) kept as they are."""

    def __init__(self, model: onnx.ModelProto, device: str, dtype):
        import torch
        unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in OPS} - {"Constant"})
        if unknown:
            raise HwpruneError(f"the torch-CUDA runtime has no torch form of ONNX op(s) {', '.join(unknown)}: "
                               "time this model with TensorRT, or add the op to hwprune.hardware.torch_cuda.OPS")
        host = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        host.update({n.output[0]: numpy_helper.to_array(_attrs(n)["value"])  # made once, not per run
                     for n in model.graph.node if n.op_type == "Constant"})
        self.consts = {}
        for name, value in host.items():
            t = torch.from_numpy(value.copy()).to(device)
            t = t.to(dtype) if t.is_floating_point() else t
            self.consts[name] = t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
        # (op, its attributes with the host values of its constant inputs and the float dtype, inputs, outputs)
        self.nodes = [(OPS[n.op_type], _attrs(n) | {"host": [host.get(i) for i in n.input], "dtype": dtype},
                       n.input, n.output) for n in model.graph.node if n.op_type != "Constant"]
        self.outputs = [o.name for o in model.graph.output]
        inits = set(self.consts)
        self.inputs = [(i.name, [d.dim_value or 1 for d in i.type.tensor_type.shape.dim],
                        i.type.tensor_type.elem_type) for i in model.graph.input if i.name not in inits]

    def example(self, device: str, dtype, seed: int = 0) -> list:
        """Random float inputs, zero integer ones (valid indices for any gather)."""
        import torch
        g = torch.Generator().manual_seed(seed)
        out = []
        for _, shape, elem in self.inputs:
            np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            t = torch.randn(shape, generator=g).to(dtype) if np.dtype(np_dtype).kind == "f" else \
                torch.zeros(shape, dtype=torch.from_numpy(np.zeros(1, np_dtype)).dtype)
            out.append(t.to(device).contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.to(device))
        return out

    def __call__(self, *args):
        env = dict(self.consts)
        env.update({name: x for (name, _, _), x in zip(self.inputs, args)})
        for op, attrs, inputs, outputs in self.nodes:
            ys = op([env[i] if i else None for i in inputs], attrs)
            for name, y in zip(outputs, ys if isinstance(ys, (tuple, list)) else (ys,)):
                env[name] = y
        return [env[o] for o in self.outputs]


# ---- timing ----

def capture(fn, warmup: int):
    """fn() captured in a CUDA graph after `warmup` eager calls; None where capture fails."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError:  # an op that syncs or allocates on the host: time it eagerly
        torch.cuda.synchronize()
        return None
    return graph


def cuda_event_timer(fn, replays: int) -> float:
    """Seconds per call of fn from CUDA events around `replays` calls."""
    import torch
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3 / replays


def interleaved(fns: list, settings: CudaSettings, timer=cuda_event_timer) -> list[Timing]:
    """One sample of each fn in turn (A B A B ...), `rounds` rounds; median, min, max per fn."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(settings.rounds):
        for fn, out in zip(fns, samples):
            out.append(timer(fn, settings.replays))
    return [Timing.of(s) for s in samples]


def time_fns(fns: list, settings: CudaSettings, timer=cuda_event_timer, capture=capture) -> tuple[list, list]:
    """Each fn captured in a CUDA graph after the warm-up (run eagerly where capture fails),
    then timed interleaved: ([Timing per fn], [indices of the fns run eagerly])."""
    graphs = [capture(fn, settings.warmup) for fn in fns]
    eager = [i for i, g in enumerate(graphs) if g is None]
    runs = [fn if g is None else g.replay for fn, g in zip(fns, graphs)]
    return interleaved(runs, settings, timer), eager


class TorchCudaRuntime:
    """The attached NVIDIA GPU through torch (CUDA graphs, eager where capture fails)."""

    def __init__(self, target, settings: CudaSettings | None = None):
        self.target, self.settings = target, settings or CudaSettings()
        self.eager: list[str] = []  # what could not be captured, for how()

    def identity(self) -> dict:
        import torch
        return {"target": self.target.name, "runtime": f"torch {torch.__version__} CUDA {torch.version.cuda}",
                "processor": torch.cuda.get_device_name(), "isa": [self.target.precision], "threads": 1}

    def how(self) -> dict:
        s = self.settings
        mode = "CUDA graphs" + (f"; eager (capture failed) for {len(self.eager)} graph(s): "
                                f"{', '.join(self.eager[:5])}" if self.eager else "")
        return self.identity() | {
            "mode": mode, "precision": self.target.precision, "memory_format": "channels_last",
            "statistic": f"median of {s.rounds} samples, each CUDA events around {s.replays} replays, "
                         f"after {s.warmup} warm-up runs; models interleaved"}

    def kernel(self, block) -> Timing:
        return self.models([block.to_model()])[0]

    def models(self, graphs: list) -> list[Timing]:
        """End to end, interleaved in one run."""
        import torch
        torch.backends.cudnn.benchmark = True
        dtype = getattr(torch, DTYPES[self.target.precision])
        with torch.inference_mode():
            fns = []
            for g in graphs:
                module = OnnxModule(g, "cuda", dtype)
                xs = module.example("cuda", dtype)
                fns.append(lambda m=module, xs=xs: m(*xs))
            timings, eager = time_fns(fns, self.settings)
        self.eager += [graphs[i].graph.name or f"model {i}" for i in eager]
        return timings

    def overhead_ms(self) -> float:
        return 0.0  # a graph replay has no per-run session cost to calibrate away
