"""ONNX export, checked in onnxruntime against PyTorch eager before anything is written.

The model is exported into a temporary folder beside `path`, loaded in onnxruntime
(CPUExecutionProvider, ORT_ENABLE_ALL), run on the example inputs and compared output by
output with the eager model. Only when every output is within `rtol` are the files moved
into place, so a failed export or check leaves nothing behind.

Relative error is the project's one metric (`hwprune.numerics.max_errors`): per output,
max|onnx - eager| / max(max|eager|, 1e-6).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ..errors import HwpruneError
from ..numerics import max_errors

# In the order "auto" tries them: on the torchvision zoo torch.onnx.export(dynamo=False) is
# the faster one and dynamo exports what it refuses (benchmarks/onnx_zoo_survey.py).
EXPORTERS = ("torchscript", "dynamo")
# protobuf cannot serialize a message over 2 GiB; keep room for the graph itself
EXTERNAL_DATA_BYTES = 2**31 - 2**26
# the dynamo exporter has no opset below 18 and its down-conversion fails on Reduce* ops
_DYNAMO_MIN_OPSET = 18
# onnxruntime's CPU provider, which checks every export, runs next to no op in bfloat16 ("Could
# not find an implementation for Mul(14)"): such an export cannot be checked
UNCHECKABLE_DTYPES = (torch.bfloat16,)


def named_outputs(out, prefix: str = "") -> list:
    """[(name, tensor)] of a model's outputs in the order the exporters flatten them:
    tuples and lists by index, mappings (dicts, HF ModelOutput) by key, None dropped;
    nested names are joined with dots ("out", "aux", "1.logits")."""
    if isinstance(out, torch.Tensor):
        return [(prefix or "output", out)]
    if out is None:
        return []
    if isinstance(out, Mapping):
        items = out.items()
    elif isinstance(out, (tuple, list)):
        items = enumerate(out)
    else:
        raise HwpruneError(
            f"model output {prefix or 'output'} is a {type(out).__name__}, not a tensor: ONNX outputs are "
            "tensors only; return tensors, or tuples, lists or dicts of them, from forward")
    return [pair for key, value in items for pair in named_outputs(value, f"{prefix}.{key}" if prefix else str(key))]


def export_onnx(model: nn.Module, example_inputs, path, *, opset: int = 17, rtol: float = 1e-4,
                exporter: str = "auto") -> dict:
    """Export `model` to `path` and check it in onnxruntime; return what was written and how close.

    exporter: "torchscript", "dynamo", or "auto": TorchScript (fastest), and dynamo only where
    TorchScript fails to export or to match ("fallback_from" then says why).
    opset is a minimum (the dynamo exporter emits at least 18); the returned "opset" is the
    one in the file. Weights of 2 GiB or more go to `<path>.data` next to the .onnx, named in
    "external_data". Raises HwpruneError when the export fails or an output's relative error
    max|a-b| / max(max|b|, 1e-6) exceeds `rtol`; nothing is written then."""
    if exporter not in ("auto", *EXPORTERS):
        raise HwpruneError(f"exporter {exporter!r} is unknown: choose auto, {', '.join(EXPORTERS)}")
    why = uncheckable(model)
    if why is not None:
        raise HwpruneError(f"{why}, so its export cannot be checked: export a float32 or float16 copy "
                           "(model.float()); nothing was written")
    inputs = _as_tuple(example_inputs)
    dest = _destination(path)
    model.eval()
    with torch.no_grad():
        expected = named_outputs(model(*inputs))
    if exporter != "auto":
        return _export_checked(model, inputs, expected, dest, opset, rtol, exporter)
    try:
        return _export_checked(model, inputs, expected, dest, opset, rtol, EXPORTERS[0])
    except HwpruneError as first:
        try:
            return _export_checked(model, inputs, expected, dest, opset, rtol, EXPORTERS[1]) | {
                "fallback_from": {"exporter": EXPORTERS[0], "error": str(first)}}
        except HwpruneError as second:
            raise HwpruneError(f"both ONNX exporters failed. {first} / {second}") from second


def uncheckable(model: nn.Module) -> str | None:
    """Why onnxruntime cannot check the model's ONNX export here (its weights' dtype), or None."""
    dtypes = {t.dtype for t in [*model.parameters(), *model.buffers()]}
    found = next((d for d in UNCHECKABLE_DTYPES if d in dtypes), None)
    if found is None:
        return None
    return f"{type(model).__name__} holds {str(found).removeprefix('torch.')} weights, which onnxruntime's CPU provider cannot run"


def onnx_graph(model: nn.Module, example_inputs, *, opset: int = 17) -> onnx.ModelProto:
    """The model as an in-memory ONNX graph with static shapes, for latency tables and
    analytic models (unchecked: what is timed need not be written). TorchScript first,
    dynamo where it fails, as export_onnx does. HwpruneError, before any work, where the graph
    cannot be made past protobuf's 2 GiB or onnxruntime cannot run it (bf16)."""
    size, why = _weight_bytes(model), uncheckable(model)
    if size >= EXTERNAL_DATA_BYTES:
        why = (f"{type(model).__name__} has {size / 2**30:.2f} GiB of weights, past the 2 GiB an in-memory ONNX "
               "graph holds")
    if why is not None:
        raise HwpruneError(f"{why}; latency budgets and tables time that graph: plan with --params, --flops or "
                           "--ratio (counted on the traced graph), or give a smaller or float32 model")
    inputs = _as_tuple(example_inputs)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="hwprune-onnx-") as tmp:
        staged = Path(tmp) / "model.onnx"
        try:
            _export(model, inputs, staged, opset, EXPORTERS[0], external=False)
        except HwpruneError:
            _export(model, inputs, staged, opset, EXPORTERS[1], external=False)
        return onnx.load(str(staged), load_external_data=True)


def _export_checked(model, inputs: tuple, expected: list, dest: Path, opset: int, rtol: float,
                    exporter: str) -> dict:
    """One exporter: export into a temp folder beside `dest`, check, then move into place."""
    name = type(model).__name__
    external = _weight_bytes(model) >= EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        staged = Path(tmp) / dest.name
        t0 = time.perf_counter()
        _export(model, inputs, staged, opset, exporter, external)
        t1 = time.perf_counter()
        outputs = _compare(name, exporter, expected, run_onnxruntime(staged, inputs, name), rtol)
        t2 = time.perf_counter()
        written_opset = _opset_of(staged)
        data = _move_into_place(staged, dest)
    return {"path": str(dest), "opset": written_opset, "exporter": exporter,
            "max_abs_err": max((o["max_abs_err"] for o in outputs), default=0.0),
            "max_rel_err": max((o["max_rel_err"] for o in outputs), default=0.0),
            "outputs": outputs, "external_data": data, "fallback_from": None,
            "seconds": {"export": round(t1 - t0, 3), "check": round(t2 - t1, 3)}}


def _as_tuple(example_inputs) -> tuple:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise HwpruneError("example inputs for ONNX export must be a tensor or a tuple of tensors")
    return inputs


def _destination(path) -> Path:
    dest = Path(path).absolute()
    if not dest.parent.is_dir():
        raise HwpruneError(f"cannot write {dest}: folder {dest.parent} does not exist; create it first")
    return dest


def _weight_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _export(model, inputs, staged: Path, opset: int, exporter: str, external: bool) -> None:
    """Write the ONNX file (and its .data file when `external`) to `staged`."""
    try:
        with warnings.catch_warnings(), _quiet_stdout_stderr():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(model, inputs, dynamo=True,
                                            opset_version=max(opset, _DYNAMO_MIN_OPSET), verbose=False)
                program.save(str(staged), external_data=external)
            else:
                torch.onnx.export(model, inputs, str(staged), dynamo=False, opset_version=opset,
                                  input_names=[f"input_{i}" for i in range(len(inputs))])
    except Exception as e:
        other = EXPORTERS[1 - EXPORTERS.index(exporter)]
        raise HwpruneError(
            f"ONNX export of {type(model).__name__} with the {exporter} exporter failed: {_root_cause(e)} "
            f"-- try exporter={other!r}; nothing was written") from e
    if exporter == "torchscript":
        _pack_external_data(staged, external)


def _root_cause(e: BaseException) -> str:
    """'Type: first line' of the innermost cause; the exporters wrap the real error."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


@contextlib.contextmanager
def _quiet_stdout_stderr():
    """Both exporters print progress and, on failure, whole graphs from C++; the error we
    raise says what failed, so silence file descriptors 1 and 2 while they run."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _pack_external_data(staged: Path, external: bool) -> None:
    """The TorchScript exporter writes one file per tensor for >2 GiB models; gather them into
    one `<name>.data` file (or make sure a small model is one self-contained file)."""
    if not external:
        return
    model = onnx.load(str(staged), load_external_data=True)
    loose = [p for p in staged.parent.iterdir() if p != staged]
    onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=staged.name + ".data")
    for p in loose:
        if p.name != staged.name + ".data":
            p.unlink()


def run_onnxruntime(staged: Path, inputs: tuple, name: str) -> list:
    """The outputs of the ONNX file `staged` in onnxruntime on the CPU (all graph optimizations),
    the export check's side of the comparison; `name` is the model's, for the error."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(staged), opts, providers=["CPUExecutionProvider"])
        declared = session.get_inputs()
        if len(declared) != len(inputs):
            raise HwpruneError(f"the ONNX graph takes {len(declared)} inputs, the model was given {len(inputs)}")
        feed = {d.name: x.detach().cpu().numpy() for d, x in zip(declared, inputs)}
        return session.run(None, feed)
    except HwpruneError:
        raise
    except Exception as e:
        raise HwpruneError(f"onnxruntime could not run the ONNX export of {name}: {type(e).__name__}: {e}; "
                           "nothing was written") from e


def _compare(name: str, exporter: str, expected: list, actual: list, rtol: float) -> list:
    """Per output: name, shape and errors; HwpruneError at the first one out of tolerance."""
    if len(expected) != len(actual):
        raise HwpruneError(f"the ONNX export of {name} has {len(actual)} outputs, the model returns "
                           f"{len(expected)} tensors ({', '.join(n for n, _ in expected)}); nothing was written")
    records = []
    for (out_name, want), got in zip(expected, actual):
        if tuple(got.shape) != tuple(want.shape):
            raise HwpruneError(f"ONNX output {out_name} of {name} has shape {tuple(got.shape)}, PyTorch gives "
                               f"{tuple(want.shape)}; nothing was written")
        abs_err, rel_err = max_errors(torch.from_numpy(np.asarray(got)), want)
        if not rel_err <= rtol:
            raise HwpruneError(
                f"ONNX export of {name} ({exporter} exporter) does not match PyTorch: output {out_name} has "
                f"max relative error {rel_err:.3g} > rtol {rtol:g} (max abs error {abs_err:.3g}); nothing "
                "was written. Check that forward has no data-dependent Python control flow or randomness, "
                "try the other exporter, or raise rtol if the difference is float rounding")
        records.append({"name": out_name, "shape": list(want.shape), "max_abs_err": abs_err, "max_rel_err": rel_err})
    return records


def _opset_of(staged: Path) -> int:
    model = onnx.load(str(staged), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _move_into_place(staged: Path, dest: Path) -> str | None:
    """Move the checked files next to `dest`: the data file first, so that the .onnx never
    appears without its weights. os.replace is atomic within one file system."""
    data = staged.with_name(staged.name + ".data")
    dest_data = None
    if data.exists():
        dest_data = dest.with_name(dest.name + ".data")
        os.replace(data, dest_data)
    os.replace(staged, dest)
    return str(dest_data) if dest_data else None
