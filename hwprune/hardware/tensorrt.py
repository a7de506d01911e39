"""TensorRT timing of one kernel, for `hwprune profile --target jetson...|cuda` run on the device.

Optional: `tensorrt` is imported only here and only when asked; without it (or without a
CUDA device) the GPU targets use an imported table or the analytic model. The kernel's ONNX
model is built into an engine (fp16, or int8 with fp16 fallback) and timed with CUDA events
around `execute_async_v3` on one stream, after a warm-up, the median of the runs kept.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import HwpruneError
from .measure import Timing


@functools.cache
def available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    from . import torch_cuda
    return torch_cuda.available()


def attached(target) -> bool:
    """A TensorRT target is attached when TensorRT and a CUDA GPU are here; a Jetson target
    only on an Orin (the device's name says so)."""
    if target.gpu is None or not available():  # only the GPU targets run on TensorRT
        return False
    import torch
    return "orin" in torch.cuda.get_device_name().lower() if target.name.startswith("jetson") else True


class TensorRTRuntime:
    """The attached GPU through TensorRT: what the GPU targets measure with on the device."""

    def __init__(self, target):
        self.target = target

    def identity(self) -> dict:
        import tensorrt as trt
        import torch
        return {"target": self.target.name, "runtime": f"tensorrt {trt.__version__}",
                "processor": torch.cuda.get_device_name(), "isa": [self.target.precision], "threads": 1}

    def how(self) -> dict:
        return self.identity() | {"statistic": "median of 200 runs (CUDA events) after 20 warm-up runs",
                                  "precision": self.target.precision}

    def kernel(self, block) -> Timing:
        return time_onnx(block.to_model(), self.target.precision)

    def models(self, graphs: list) -> list[Timing]:
        return [time_onnx(g, self.target.precision) for g in graphs]

    def overhead_ms(self) -> float:
        return 0.0


def _engine(onnx_bytes: bytes, precision: str):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HwpruneError(f"TensorRT cannot parse a kernel's ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        for i in range(network.num_layers):  # timing only: any range gives int8 kernels their shapes
            layer = network.get_layer(i)
            for j in range(layer.num_outputs):
                layer.get_output(j).dynamic_range = (-4.0, 4.0)
        for i in range(network.num_inputs):
            network.get_input(i).dynamic_range = (-4.0, 4.0)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HwpruneError("TensorRT could not build an engine for a kernel (see its log above)")
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def time_onnx(model, precision: str, runs: int = 200, warmup: int = 20) -> Timing:
    """Median per-run time of the kernel's engine (CUDA events around each run)."""
    return time_engine(_engine(model.SerializeToString(), precision), runs, warmup)


def time_engine(engine, runs: int = 200, warmup: int = 20) -> Timing:
    """Median per-run time of a deserialized engine (CUDA events around each run), random inputs."""
    import tensorrt as trt
    import torch

    context = engine.create_execution_context()
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = torch.from_numpy(np.zeros(1, trt.nptype(engine.get_tensor_dtype(name)))).dtype
        shape = tuple(engine.get_tensor_shape(name))
        # indices (token ids) must be valid: 0 is, for any gather
        t = torch.randn(shape, device="cuda").to(dtype) if dtype.is_floating_point else \
            torch.zeros(shape, dtype=dtype, device="cuda")
        buffers.append(t)
        context.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            context.execute_async_v3(stream.cuda_stream)
        samples = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            context.execute_async_v3(stream.cuda_stream)
            end.record(stream)
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e-3)
    return Timing.of(samples)
