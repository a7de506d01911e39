"""The TensorRT step of `slim --target jetson...|cuda`: an engine where TensorRT can build one,
else the exact trtexec command that builds and times it on the device.

TensorRT is optional (`pip install 'hwprune[tensorrt]'` on a machine with an NVIDIA GPU; on a
Jetson it comes with JetPack) and is imported only in `build_engine`. trtexec refuses
--shapes/--minShapes/--optShapes/--maxShapes for an ONNX file whose inputs are all static
("Static model does not take explicit shapes"), and hwprune's ONNX files are static, so the
command gives none: the shapes are in the file, and the report lists them.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import HwpruneError

# warm-up in ms and measuring time in s (trtexec's --warmUp and --duration)
WARMUP_MS = 500
DURATION_S = 10


def trtexec_command(onnx_path: Path, engine_path: Path, precision: str, times_path: Path | None = None,
                    *, sparse_weights: bool = False) -> list[str]:
    """trtexec arguments that build `onnx_path` into `engine_path` and time it: fp16, or int8 with
    fp16 fallback; CUDA graphs and no host<->device copies, as a deployed engine runs.
    sparse_weights: let TensorRT pick its 2:4 sparse tactics where a weight is 2:4 (sm80+)."""
    argv = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--fp16"]
    if precision == "int8":
        argv.append("--int8")
    if sparse_weights:
        argv.append("--sparsity=enable")
    argv += ["--useCudaGraph", "--noDataTransfers", "--useSpinWait", f"--warmUp={WARMUP_MS}",
             f"--duration={DURATION_S}"]
    if times_path is not None:
        argv.append(f"--exportTimes={times_path}")
    return argv


def trtexec_record(onnx_path: Path, engine_path: Path, precision: str, inputs: list, spec_note: str, *,
                   sparse_weights: bool = False) -> dict:
    """What the report and the console say about running the slim model on the device."""
    times = engine_path.with_name(engine_path.stem + ".trtexec-times.json")
    argv = trtexec_command(onnx_path, engine_path, precision, times, sparse_weights=sparse_weights)
    notes = [f"inputs are static in the ONNX file ({', '.join(f'{n} {s}' for n, s in inputs)}), so trtexec "
             "takes no --shapes",
             "on a Jetson, fix the power mode and clocks first (sudo nvpmodel -m MODE; sudo jetson_clocks); the "
             f"analytic prediction assumes {spec_note}",
             "trtexec prints 'GPU Compute Time' (median): compare it with the predicted latency; for the "
             "measured speedup, export the original model to ONNX and time it with the same flags"]
    if precision == "int8":
        notes.append("without --calib=CACHE (a calibration cache made from your data) trtexec gives int8 "
                     "placeholder scales: its timing holds, its outputs do not")
    return {"command": shlex.join(argv), "argv": argv, "notes": notes}


def onnx_inputs(onnx_path: Path) -> list[tuple[str, str]]:
    """[(name, '1x3x224x224')] of the ONNX file's graph inputs."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [(i.name, "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                              for d in i.type.tensor_type.shape.dim))
            for i in graph.input if i.name not in weights]


def build_engine(onnx_path: Path, engine_path: Path, precision: str, calibration: list | None = None, *,
                 sparse_weights: bool = False) -> dict:
    """Build the engine of `onnx_path` (fp16; int8 with fp16 fallback, calibrated with an entropy
    calibrator on `calibration`, a list of input tuples), write it to `engine_path`, time it.
    Needs tensorrt and a CUDA GPU (hwprune.hardware.tensorrt.available())."""
    import tensorrt as trt

    from ..hardware.tensorrt import time_engine

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HwpruneError(f"{onnx_path.name}: TensorRT {trt.__version__} cannot parse the ONNX file ({errors}); "
                           "nothing was written")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    if sparse_weights:  # 2:4 weights (hwprune sparsify --pattern 2:4) may then run sparse tensor-core tactics
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    calibrator = None
    if precision == "int8":
        if not calibration:
            raise HwpruneError("--precision int8 needs calibration inputs to build a TensorRT engine: give "
                               "--example-inputs with representative data")
        calibrator = _calibrator(trt, calibration)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HwpruneError(f"{onnx_path.name}: TensorRT {trt.__version__} could not build an engine (its log is "
                           "above); nothing was written")
    engine_path.write_bytes(bytes(serialized))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    timing = time_engine(engine)
    import torch
    return {"engine": str(engine_path), "tensorrt": trt.__version__, "device": torch.cuda.get_device_name(),
            "precision": precision, "calibration_batches": len(calibration or ()),
            "timing": timing.to_json(), "how": "median of 200 runs (CUDA events) after 20 warm-up runs"}


def _calibrator(trt, batches: list):
    """An entropy calibrator over `batches` (tuples of CPU tensors, one per input)."""
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.pending = list(batches)
            self.device: list = []
            self.cache = None

        def get_batch_size(self):
            return 1  # explicit-batch networks: the batch is in the input shapes

        def get_batch(self, names):
            if not self.pending:
                return None
            self.device = [t.contiguous().to("cuda") for t in self.pending.pop(0)]
            return [t.data_ptr() for t in self.device]

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache):
            self.cache = bytes(cache)

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise HwpruneError(f"TensorRT {trt.__version__} has no implicit int8 calibration: use --precision fp16 here, "
                           "or quantize the ONNX file explicitly (Q/DQ) and build it with trtexec")
    return Calibrator()
