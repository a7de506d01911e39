"""A deployment pipeline with hwprune as one pass: prune, export to ONNX, quantize to INT8 with
onnxruntime, and measure CPU latency after each stage (users prune, then quantize).

    python examples/pipeline.py resnet50     # INT8 by quantize_static, with calibration data
    python examples/pipeline.py minilm       # INT8 by quantize_dynamic (the transformer's way)

Stages, each an ONNX file in --out (default ./pipeline-out):
    original        the model, fp32
    slim            hwprune.SlimPass(target="cpu", speedup=1.5): planned on this CPU's latency table
    slim + INT8     the slim ONNX file quantized
    original + INT8 the original quantized, for reference: does pruning add to quantization?
All four are timed in onnxruntime in one run, interleaved (A B C D A B C D ...), as
hwprune.hardware.measure.time_sessions does, so their ratios hold on a busy machine.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

import hwprune
from hwprune.export.onnx import export_onnx
from hwprune.hardware.measure import OrtSettings, time_sessions

STAGES = ("original", "slim", "slim + INT8", "original + INT8")


def build(name: str):
    """(model, example inputs, calibration batches, "static" or "dynamic")."""
    gen = torch.Generator().manual_seed(0)
    if name == "resnet50":
        import torchvision
        torch.manual_seed(0)
        model = torchvision.models.resnet50(weights=None).eval()
        # 16 calibration batches: stand-ins for real images, drawn like normalized pixels
        calibration = [(torch.randn(1, 3, 224, 224, generator=gen),) for _ in range(16)]
        return model, calibration[0], calibration, "static"
    if name == "minilm":
        from hwprune.zoo import minilm
        model, inputs = minilm(seq_len=128)
        return model, inputs, [inputs], "dynamic"
    raise SystemExit(f"unknown model {name!r}: choose resnet50 or minilm")


class Calibration(CalibrationDataReader):
    """The calibration batches (a list of input tuples) as quantize_static reads them."""

    def __init__(self, input_names: list, batches: list):
        super().__init__()
        self.feeds = iter([{n: t.numpy() for n, t in zip(input_names, batch)} for batch in batches])

    def get_next(self):
        return next(self.feeds, None)


def quantize(src: Path, dst: Path, kind: str, calibration: list) -> None:
    """INT8 by onnxruntime.quantization: static (QDQ, per-channel weights, MinMax calibration) for
    convnets, dynamic (int8 weights, activations quantized at run time) for transformers."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = dst.with_name(dst.stem + ".pre.onnx")
    quant_pre_process(str(src), str(prepared))  # shape inference and graph cleanup, as the docs advise
    if kind == "static":
        import onnx
        names = [i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input]
        quantize_static(str(prepared), str(dst), Calibration(names, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    else:
        quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8)
    prepared.unlink()


def run(name: str, out: Path, *, speedup: float = 1.5, threads: int = 1, max_s: float = 5.0, target: str = "cpu",
        built=None) -> dict:
    """Prune, export, quantize, and time every stage in one interleaved run; the record of it.
    built: what build(name) returns, for a model of your own; target: what SlimPass plans for."""
    out.mkdir(parents=True, exist_ok=True)
    model, inputs, calibration, kind = built or build(name)

    slim_pass = hwprune.SlimPass(target=target, speedup=speedup, threads=threads, measure=False)
    slim = slim_pass(model, inputs)

    files = {stage: out / f"{name}.{stage.replace(' + ', '.').lower()}.onnx" for stage in STAGES}
    for stage, source in (("original", model), ("slim", slim)):
        files[stage].unlink(missing_ok=True)
        export_onnx(source, inputs, files[stage])  # checked in onnxruntime against PyTorch
    quantize(files["slim"], files["slim + INT8"], kind, calibration)
    quantize(files["original"], files["original + INT8"], kind, calibration)

    settings = OrtSettings(threads=threads, max_s=max_s)
    sessions = [settings.session(str(files[s])) for s in STAGES]
    feed = {i.name: x.numpy() for i, x in zip(sessions[0].get_inputs(), inputs)}
    outputs = [s.run(None, feed)[0] for s in sessions]
    timings = time_sessions(sessions, settings, [feed] * len(sessions))

    base = timings[0].median_ms
    stages = []
    for stage, timing, output in zip(STAGES, timings, outputs):
        stages.append({"stage": stage, **timing.to_json(), "speedup": round(base / timing.median_ms, 3),
                       "file_mb": round(files[stage].stat().st_size / 2**20, 2),
                       "agreement_with_original": _agreement(output, outputs[0], name)})
    plan = slim_pass.report["plan"]
    return {"model": name, "target": target, "input": [list(x.shape) for x in inputs], "quantization": kind,
            "slim": {"asked_speedup": speedup, "predicted_ms": [plan["predicted_before"], plan["predicted_after"]],
                     "params": slim_pass.report["params"], "macs": slim_pass.report["macs"]},
            "stages": stages, "how": settings.how() | {"order": "interleaved, the four stages in turn"}}


def _agreement(output: np.ndarray, reference: np.ndarray, name: str) -> dict:
    """How close a stage's output is to the original's: cosine similarity of sentence embeddings
    (MiniLM), top-1 agreement and relative error of logits (ResNet; random weights, so only
    quantization and pruning error, not accuracy)."""
    a, b = output.reshape(len(output), -1).astype(np.float64), reference.reshape(len(reference), -1).astype(np.float64)
    cos = float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    record = {"cosine": round(cos, 5)}
    if a.shape[1] > 1 and name != "minilm":
        record["top1_same"] = bool(np.all(a.argmax(1) == b.argmax(1)))
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=("resnet50", "minilm"))
    ap.add_argument("--out", type=Path, default=Path("pipeline-out"))
    ap.add_argument("--speedup", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    record = run(args.model, args.out, speedup=args.speedup, threads=args.threads)
    for s in record["stages"]:
        print(f"{s['stage']:<16} {s['median_ms']:9.3f} ms  ({s['speedup']:.2f}x)  {s['file_mb']:7.2f} MB  "
              f"agreement {s['agreement_with_original']}")
    print(json.dumps(record["how"], indent=1))


if __name__ == "__main__":
    main()
