"""The deployment bundle of one `hwprune slim` run, written all or nothing.

    OUT.pt            the slim model (torch.save; a .pt2 in gives a .pt2 out)
    OUT.onnx          checked in onnxruntime against PyTorch (max relative error <= 1e-4)
    OUT.report.json   the report
    OUT.report.html   the report with plots, one self-contained file
    OUT.pt2           (--pt2) an ExportedProgram, reloaded and checked against PyTorch
    OUT/              (Hugging Face models) save_pretrained, reloaded with hwprune.load_pretrained
                      (transformers' from_pretrained into the saved per-layer widths) and checked
    OUT.engine        (TensorRT targets, where TensorRT and a GPU are here) the engine, timed

Every file is written and checked in a staging folder beside its destination
(hwprune.deploy.outputs) and moved into place only when all of them are.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import HwpruneError
from ..report import Report, write_json  # noqa: F401  (write_json: the name the CLI imports from here)
from .outputs import StagedOutputs

RTOL = 1e-4  # the project's tolerance for an export against PyTorch


@dataclass(frozen=True)
class Bundle:
    model: Path
    report: Path | None = None
    onnx: Path | None = None
    html: Path | None = None
    pt2: Path | None = None
    hf: Path | None = None  # a folder
    engine: Path | None = None

    def outputs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def stage(self, *, force: bool, inputs=()) -> StagedOutputs:
        """Check every output now (before any work); enter the result to write them."""
        return StagedOutputs(self.outputs(), force=force, inputs=inputs, folders=("hf",))


def bundle_paths(model: Path) -> dict:
    """The deployment files named after the model file: a.slim.pt -> a.slim.onnx, a.slim.report.json,
    a.slim.report.html, a.slim.engine, and a.slim/ for save_pretrained."""
    stem = model.with_suffix("")
    return {"onnx": stem.with_name(stem.name + ".onnx"), "report": stem.with_name(stem.name + ".report.json"),
            "html": stem.with_name(stem.name + ".report.html"), "engine": stem.with_name(stem.name + ".engine"),
            "hf": stem}


def is_hf_model(model) -> bool:
    transformers = sys.modules.get("transformers")  # never imported just to ask
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def write_bundle(model, report, example_inputs: tuple, stage: StagedOutputs, *, target=None,
                 precision: str = "fp16", progress=None) -> Report:
    """Write the bundle's outputs into `stage`, checking each, then commit them all; return the
    report (a Report, or a report dict) as written, with the sections "onnx", "pt2", "hf",
    "tensorrt" and "outputs" added."""
    report = report if isinstance(report, Report) else Report.of(report)
    with stage:
        steps = [k for k in ("model", "onnx", "pt2", "hf", "engine", "report", "html") if k in stage.outputs]
        tick = _ticker(progress, len(steps))
        tick("save model")
        save_module(model, stage.path("model"), example_inputs)
        if "onnx" in stage.outputs:
            tick("export onnx")
            from ..export.onnx import export_onnx
            onnx = export_onnx(model, example_inputs, stage.path("onnx"), rtol=RTOL) | {
                "path": str(stage.final("onnx").absolute())}
            if onnx.get("external_data"):
                onnx["external_data"] = str(stage.final("onnx").absolute()) + ".data"
            report = report.with_section("onnx", onnx)
        if "pt2" in stage.outputs:
            tick("export pt2")
            report = report.with_section("pt2", write_pt2(model, example_inputs, stage.path("pt2")) | {
                "path": str(stage.final("pt2").absolute())})
        if "hf" in stage.outputs:
            tick("save_pretrained")
            report = report.with_section("hf", write_pretrained(model, example_inputs, stage.path("hf")) | {
                "path": str(stage.final("hf").absolute())})
        if target is not None and target.gpu is not None and "onnx" in stage.outputs:
            tick("tensorrt")
            report = report.with_section("tensorrt", _tensorrt(stage, target, precision, example_inputs))
        report = report.with_section("outputs", {k: str(v) for k, v in stage.outputs.items()})
        if "report" in stage.outputs:
            tick("write report")
            report.write_json(stage.path("report"))
        if "html" in stage.outputs:
            tick("write html")
            stage.path("html").write_text(report.to_html(), encoding="utf-8")
        tick("commit")
        stage.commit(required=list(stage.outputs))
    return report


def _ticker(progress, total: int):
    done = [0]

    def tick(step: str) -> None:
        if progress is not None:
            progress(f"write: {step}", min(done[0], total), total)
        done[0] += 1
    return tick


def _tensorrt(stage: StagedOutputs, target, precision: str, example_inputs: tuple) -> dict:
    """An engine where TensorRT and a GPU are here, else the trtexec command for the device."""
    from ..hardware import tensorrt as trt_here
    from ..hardware.analytic import GPU_SPECS
    from .tensorrt import build_engine, onnx_inputs, trtexec_record

    spec = GPU_SPECS[target.gpu]
    engine = stage.outputs.get("engine") or stage.final("onnx").with_suffix(".engine")
    record = {"target": target.name, "precision": precision,
              "trtexec": trtexec_record(stage.final("onnx"), engine, precision, onnx_inputs(stage.path("onnx")),
                                        f"{spec.name}: {spec.source}"),
              "engine": None}
    if "engine" in stage.outputs:  # planned where TensorRT and a GPU are here
        record["engine"] = build_engine(stage.path("onnx"), stage.path("engine"), precision,
                                        [example_inputs]) | {"engine": str(stage.final("engine"))}
        record["engine"]["on_target"] = trt_here.attached(target)
    else:
        record["why_not_built"] = ("TensorRT is not installed here" if not _importable("tensorrt")
                                   else "no CUDA GPU is here")
    return record


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------- the writers

def save_module(model, path: Path, example_inputs: tuple) -> None:
    """A module with torch.save; a model that is an exported graph (from a .pt2) is exported
    again and saved with torch.export.save, since such graphs do not pickle."""
    import torch

    from ..graph.trace import is_exported_graph
    if is_exported_graph(model):
        torch.export.save(torch.export.export(model, tuple(example_inputs), strict=False), path)
    else:
        torch.save(model, path)


def write_pt2(model, example_inputs: tuple, path: Path) -> dict:
    """torch.export the model, save it, load it back and compare it with the model."""
    import torch

    try:
        program = torch.export.export(model, tuple(example_inputs), strict=False)
        torch.export.save(program, path)
        with path.open("rb") as f:
            reloaded = torch.export.load(f).module()
    except Exception as e:  # the exporter raises many types; all mean the same here
        raise HwpruneError(f"--pt2 {path.name}: torch.export of the slim {type(model).__name__} failed "
                           f"({type(e).__name__}: {_first_line(e)}); nothing was written") from e
    return _compare(f"--pt2 {path.name}", model, reloaded, example_inputs)


def write_pretrained(model, example_inputs: tuple, folder: Path) -> dict:
    """save_pretrained, then hwprune.load_pretrained (transformers' loader, into the per-layer
    widths the config records) into a new object, compared with the model."""
    from transformers.utils import logging as hf_logging

    from ..hf import load_pretrained

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report is ours to give, as one line
    try:
        model.save_pretrained(folder)
        reloaded = load_pretrained(folder)
    except Exception as e:  # a config that does not describe the cut model fails here, with any type
        raise HwpruneError(f"{folder.name}/: the slim {type(model).__name__} does not reload from its save_pretrained "
                           f"folder ({type(e).__name__}: {_first_line(e)}); nothing was written. Its config must "
                           "describe the cut widths: report this model type") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return _compare(f"{folder.name}/ (load_pretrained)", model, reloaded, example_inputs)


def _compare(what: str, model, reloaded, example_inputs: tuple) -> dict:
    import torch

    from ..export.onnx import named_outputs
    from ..numerics import max_errors
    with torch.no_grad():
        want, got = named_outputs(model(*example_inputs)), dict(named_outputs(reloaded(*example_inputs)))
    missing = [n for n, _ in want if n not in got]  # extra outputs (a default pooler) do no harm
    if missing:
        raise HwpruneError(f"{what}: the reloaded model does not return {', '.join(missing)}, which the slim model "
                           "returns; nothing was written")
    worst = 0.0
    for name, w in want:
        _, rel = max_errors(got[name], w)
        if not rel <= RTOL:
            raise HwpruneError(f"{what}: output {name} of the reloaded model differs from the slim model (max "
                               f"relative error {rel:.3g} > {RTOL:g}); nothing was written")
        worst = max(worst, rel)
    return {"max_rel_err": worst}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
