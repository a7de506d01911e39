"""Stage 0 of the pipeline: a model spec to an eval-mode nn.Module plus example inputs.

Specs:
    model.pt                 a module saved with torch.save(model); unpickling runs code, so
                             only with trust_pickle=True (--trust-pickle)
    model.pt2                a torch.export ExportedProgram (torch.export.save), read without running
                             code from the file unless trust_pickle (hwprune.pt2)
    torchvision:NAME         torchvision.models.get_model(NAME, weights=None)
    timm:NAME                timm.create_model(NAME, pretrained=False)
    hf:MODEL_TYPE            a small Hugging Face model of that type from its config (hwprune.hf)
    package.module:factory   factory() returns a module or (module, example_inputs)

Example inputs, first that applies: example_inputs, input_shape, the inputs the spec carries
(a factory's tuple, a .pt2's sample inputs), the family default. One forward pass under
torch.no_grad checks that they fit, so a wrong shape fails here with the shape named.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from .errors import InputError, ModelLoadError

Shapes = tuple[tuple[int, ...], ...]

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_IMAGE = ((1, 3, 224, 224),)
# what torch.load raises on a damaged file, by format (zip record, pickle stream, legacy header)
_PICKLE_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, IndexError)
_SHAPE_HINT = "for example --input-shape 1,3,224,224"

# torchvision family -> default input shapes. Sizes are those of the weights=None builders
# (vit_h_14 is built for 224 without weights, although its default weights use 518).
_TORCHVISION_FAMILY_SHAPES: dict[str, Shapes] = {
    "classification": _IMAGE,
    "segmentation": _IMAGE,
    "detection": _IMAGE,
    "quantization": _IMAGE,
    "video": ((1, 3, 16, 112, 112),),
    "optical_flow": ((1, 3, 224, 224), (1, 3, 224, 224)),  # RAFT takes two frames
}
_TORCHVISION_MODEL_SHAPES: dict[str, Shapes] = {
    "inception_v3": ((1, 3, 299, 299),),
    "quantized_inception_v3": ((1, 3, 299, 299),),
    # these video models pool or patch down to nothing below 224 pixels and 16 frames
    "s3d": ((1, 3, 16, 224, 224),),
    "mvit_v1_b": ((1, 3, 16, 224, 224),),
    "mvit_v2_s": ((1, 3, 16, 224, 224),),
}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model ready for the pass.

    module: the model in eval mode (a .pt2's graph module keeps the mode it was exported in).
    example_inputs: positional inputs for one forward pass, already checked to fit.
    spec: the spec as the user gave it; path: the file it names, or None.
    family: where the module came from ("torch.save", "torch.export", "torchvision.<kind>",
        "timm", "factory").
    inputs_from: where example_inputs came from, for the summary.
    """

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    spec: str
    path: Path | None
    family: str
    inputs_from: str = ""

    @property
    def name(self) -> str:
        return spec_name(self.spec)


@dataclasses.dataclass(frozen=True)
class _Source:
    """What a spec loader found: the module, inputs the spec carries (or None), default shapes."""

    module: nn.Module
    family: str
    inputs: tuple[torch.Tensor, ...] | None = None
    default_shapes: Shapes = _IMAGE
    default_from: str = ""


def load_spec(spec: str, *, trust_pickle: bool = False, input_shape=None, example_inputs=None,
              default_input_shape=None, default_from: str = "the given default") -> LoadedModel:
    """Turn a model spec into a LoadedModel; raises ModelLoadError or InputError.

    default_input_shape replaces the family default, and default_from says where it came
    from in messages (apply uses the shape that slim recorded in its report).
    """
    path = spec_path(spec)
    source = _load_source(spec, path, trust_pickle)
    if default_input_shape is not None:
        source = dataclasses.replace(source, default_shapes=_as_shapes(default_input_shape),
                                     default_from=default_from)
    inputs, inputs_from = _choose_inputs(source, input_shape, example_inputs)
    _check_forward(spec, source.module, inputs, inputs_from)
    return LoadedModel(source.module, inputs, spec, path, source.family, inputs_from)


def spec_kind(spec: str) -> str:
    """One of "torchvision", "timm", "hf", "factory", "file"."""
    scheme, sep, _ = spec.partition(":")
    if sep and scheme in ("torchvision", "timm", "hf"):
        return scheme
    if _FACTORY.fullmatch(spec) and not Path(spec).exists():
        return "factory"
    return "file"


def spec_path(spec: str) -> Path | None:
    """The file a spec names, or None for zoo and factory specs."""
    return Path(spec) if spec_kind(spec) == "file" else None


def spec_name(spec: str) -> str:
    """A short file-name-safe name for the model: default output is <name>.slim.pt."""
    kind = spec_kind(spec)
    name = Path(spec).stem if kind == "file" else spec.rpartition(":")[2]
    return re.sub(r"[^\w.-]", "_", name) or "model"


def parse_shapes(text: str) -> Shapes:
    """Parse --input-shape: "1,3,224,224", or several inputs separated by ";"."""
    try:
        shapes = tuple(tuple(int(d) for d in part.split(",")) for part in text.split(";"))
    except ValueError:
        shapes = ()
    if not shapes or any(not s or min(s) < 1 for s in shapes):
        raise InputError(
            f"input shape {text!r} is not a list of positive integers: write it as "
            "--input-shape 1,3,224,224 (several inputs separated by ';')")
    return shapes


def format_shapes(shapes) -> str:
    return ";".join(",".join(str(d) for d in s) for s in shapes)


# ---------------------------------------------------------------- spec loaders

def _load_source(spec: str, path: Path | None, trust_pickle: bool) -> _Source:
    kind = spec_kind(spec)
    name = spec.partition(":")[2]
    if kind == "torchvision":
        return _load_torchvision(name)
    if kind == "timm":
        return _load_timm(name)
    if kind == "hf":
        return _load_hf(name)
    if kind == "factory":
        return _load_factory(spec)
    return _load_file(path, trust_pickle)


def _load_hf(model_type: str) -> _Source:
    """hf:MODEL_TYPE: a small model of that type from its config, random weights, with inputs."""
    from .hf import small_model
    module, inputs = small_model(model_type)
    return _Source(module, "hf", inputs, tuple(tuple(t.shape) for t in inputs), f"hf:{model_type}'s inputs")


def _load_torchvision(name: str) -> _Source:
    tv = _import_zoo("torchvision", "torchvision")
    if name not in tv.models.list_models():
        raise ModelLoadError(
            f"torchvision:{name}: no torchvision model is called {name!r}"
            f"{_did_you_mean(name, tv.models.list_models())}; "
            "list the valid names with "
            "python -c \"import torchvision; print(torchvision.models.list_models())\"")
    with seeded():
        module = tv.models.get_model(name, weights=None)
    kind = _torchvision_kind(tv, name)
    shapes = _TORCHVISION_MODEL_SHAPES.get(name, _TORCHVISION_FAMILY_SHAPES[kind])
    return _Source(module.eval(), f"torchvision.{kind}", default_shapes=shapes)


def _torchvision_kind(tv, name: str) -> str:
    for kind in ("segmentation", "detection", "video", "optical_flow", "quantization"):
        if name in tv.models.list_models(module=getattr(tv.models, kind)):
            return kind
    return "classification"


def _load_timm(name: str) -> _Source:
    timm = _import_zoo("timm", "timm")
    if not timm.is_model(name):
        raise ModelLoadError(
            f"timm:{name}: no timm model is called {name!r}"
            f"{_did_you_mean(name, timm.list_models())}; "
            "list the valid names with python -c \"import timm; print(timm.list_models())\"")
    with seeded():
        module = timm.create_model(name, pretrained=False)
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    size = cfg.get("input_size")
    shapes = ((1, *size),) if size else _IMAGE
    return _Source(module.eval(), "timm", default_shapes=shapes)


@contextlib.contextmanager
def seeded(seed: int = 0):
    """Random weights drawn from `seed` (the caller's random state left as it was): the same
    torchvision: or timm: spec gives the same model, so the same command gives the same plan
    (Fisher, auto's criterion for a budget, reads the weights' values, not only their sizes)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _import_zoo(package: str, extra: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ModelLoadError(
            f"{package}: specs need the {package} package, which is not installed: "
            f"pip install {extra}") from e


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# Said in --help wherever an option takes a factory spec: importing it runs the user's code.
FACTORY_RUNS_CODE = ("pkg.module:factory IMPORTS pkg.module AND RUNS factory(): your code, with your permissions; "
                     "give only code you trust")


def import_factory(spec: str, returns: str, error=ModelLoadError):
    """The function a `package.module:function` spec names; importing it runs the user's code."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{spec}: cannot import module {module_name!r} ({e}): make sure it is on PYTHONPATH (the "
                    "current directory is searched), or give a file path") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise error(f"{spec}: module {module_name!r} has no callable {attr!r}: give package.module:function "
                    f"where the function returns {returns}")
    return factory


def _load_factory(spec: str) -> _Source:
    factory = import_factory(spec, "a module or (module, example_inputs)")
    built = factory()
    module, inputs = built if isinstance(built, tuple) and len(built) == 2 else (built, None)
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"{spec}: the factory returned {type(built).__name__}, not an nn.Module: "
            "return a module or (module, example_inputs)")
    if inputs is not None:
        inputs = _as_input_tuple(inputs, f"the inputs returned by {spec}")
    return _Source(module.eval(), "factory", inputs)


# ---------------------------------------------------------------- files

def _load_file(path: Path, trust_pickle: bool) -> _Source:
    from .deploy.outputs import settle
    settle(path.absolute().parent)  # a bundle that a killed run was moving into place becomes whole first
    if not path.exists():
        raise ModelLoadError(
            f"{path}: no such file: check the path, or give torchvision:NAME, timm:NAME or "
            "package.module:factory")
    if path.is_dir():
        raise ModelLoadError(
            f"{path}: is a directory, not a model file: give the .pt or .pt2 file in it")
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        raise ModelLoadError(
            f"{path}: the file is empty: save the model again with torch.save(model)")
    if head.startswith(b"PK"):
        names = _zip_names(path)
        if any(n.endswith("archive_format") for n in names):
            return _load_pt2(path, trust_pickle)
        if any(n.endswith("constants.pkl") for n in names):
            raise ModelLoadError(
                f"{path}: is a TorchScript archive (torch.jit.save), which cannot be cut: save the "
                "nn.Module with torch.save(model) or torch.export.save")
    elif not head.startswith(b"\x80"):  # pickle protocol >= 2, the legacy torch.save format
        raise ModelLoadError(
            f"{path}: is not a file saved with torch.save (it starts with {head!r}): give a module "
            "saved with torch.save(model), a .pt2 from torch.export.save, or a factory spec")
    return _load_pickle(path, trust_pickle)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(
            f"{path}: is truncated or corrupt ({e}): copy or save it again") from e


def _load_pickle(path: Path, trust_pickle: bool) -> _Source:
    try:  # weights_only never runs code; it reads state_dicts and tells us whether code is needed
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except _PICKLE_ERRORS as e:
        if "Weights only load failed" not in str(e):
            raise _corrupt(path, e) from e
        if not trust_pickle:
            raise ModelLoadError(
                f"{path}: holds a pickled module, and unpickling can run any code the file "
                "contains, so hwprune does not load it by default: if you trust the file, pass "
                "--trust-pickle; otherwise give a .pt2 or a factory spec") from None
        obj = _load_trusted(path)
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path}: {_describe(obj)}, not a module: save the module with "
                             "torch.save(model) or give a factory spec pkg.module:factory")
    return _Source(obj.eval(), "torch.save")


def _load_trusted(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as e:
        raise ModelLoadError(
            f"{path}: needs a class that cannot be imported here ({e}): run from the directory "
            "that holds the model's code, or give a factory spec pkg.module:factory") from e
    except _PICKLE_ERRORS as e:
        raise _corrupt(path, e) from e


def _corrupt(path: Path, e: BaseException) -> ModelLoadError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ModelLoadError(f"{path}: is truncated or corrupt ({first}): copy or save it again")


def _describe(obj) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "holds a dict of tensors (a state_dict)"
    if isinstance(obj, dict) and not obj:
        return "holds an empty dict"
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        return f"holds a dict with keys {keys}{', ...' if len(obj) > 5 else ''}"
    return f"holds a {type(obj).__name__}"


def _load_pt2(path: Path, trust_pickle: bool) -> _Source:
    from .pt2 import read_pt2
    try:  # without trust, nothing in the file runs: hwprune.pt2
        program = read_pt2(path, trust_pickle=trust_pickle)
    except ModelLoadError:
        raise
    except Exception as e:  # the deserializer raises many types; all mean the same to the user
        raise ModelLoadError(
            f"{path}: cannot be read as a torch.export program ({type(e).__name__}: "
            f"{_first_line(e)}): export and save it again with torch.export.save") from e
    args = (program.example_inputs or ((), {}))[0]
    inputs = _as_input_tuple(args, f"the sample inputs in {path}") if args else None
    # ExportedProgram.module() does not support .eval(); the graph keeps its export-time mode.
    return _Source(program.module(), "torch.export", inputs)


# ---------------------------------------------------------------- example inputs

def _choose_inputs(source: _Source, input_shape, example_inputs):
    if example_inputs is not None:
        if isinstance(example_inputs, (str, Path)):
            return _load_inputs_file(Path(example_inputs)), f"--example-inputs {example_inputs}"
        return _as_input_tuple(example_inputs, "example_inputs"), "example_inputs"
    if input_shape is not None:
        shapes = _as_shapes(input_shape)
        return _random_inputs(source.module, shapes), f"--input-shape {format_shapes(shapes)}"
    if source.inputs is not None:
        return source.inputs, f"inputs given by the {source.family} spec"
    inputs_from = source.default_from or f"default for {source.family}"
    return _random_inputs(source.module, source.default_shapes), inputs_from


def _as_shapes(input_shape) -> Shapes:
    """--input-shape text, one shape (1, 3, 224, 224), or a tuple of shapes."""
    if isinstance(input_shape, str):
        return parse_shapes(input_shape)
    if all(isinstance(d, int) for d in input_shape):
        return (tuple(input_shape),)
    return tuple(tuple(s) for s in input_shape)


def _load_inputs_file(path: Path) -> tuple[torch.Tensor, ...]:
    if not path.is_file():
        raise InputError(f"{path}: no such example-inputs file: save a tuple of tensors with "
                         "torch.save((x,), path), or use --input-shape")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read means the same to the user
        raise InputError(
            f"{path}: cannot be read as example inputs ({type(e).__name__}: {_first_line(e)}): "
            "save a tuple of tensors with torch.save((x,), path)") from e
    return _as_input_tuple(obj, str(path))


_CALIBRATION_FIX = ("save a list of input tuples shaped like the example inputs, torch.save([(x1,), (x2,)], path), "
                    "or one batch of N, torch.save((xs,), path)")


def read_calibration(path: Path):
    """--calibration FILE.pt as saved with torch.save (tensors, lists and tuples only); read before
    the model is loaded, so that a bad file fails at once. calibration_items splits it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such calibration file: {_CALIBRATION_FIX}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read means the same to the user
        raise InputError(f"{path}: cannot be read as calibration inputs ({type(e).__name__}: "
                         f"{_first_line(e)}): {_CALIBRATION_FIX}") from e


def calibration_items(obj, path: Path, example: tuple) -> list[tuple[torch.Tensor, ...]]:
    """What read_calibration read, as input tuples: a list of input tuples (or of tensors, for
    one input), each shaped like the example inputs; or one batch, a tensor or a tuple of tensors
    like the example's but N times its batch along dim 0, split into N items."""
    if isinstance(obj, list):
        return [_as_input_tuple(item, f"{path}, item {i}") for i, item in enumerate(obj)]
    batch = _as_input_tuple(obj, str(path))
    if len(batch) != len(example):
        raise InputError(f"{path}: holds {len(batch)} tensors, the model takes {len(example)} inputs: "
                         f"{_CALIBRATION_FIX}")
    step = example[0].shape[0] if example[0].dim() else 0
    counts = {t.shape[0] if t.dim() else 0 for t in batch}
    if not step or len(counts) != 1 or next(iter(counts)) % step or any(
            t.shape[1:] != e.shape[1:] for t, e in zip(batch, example)):
        got, want = format_shapes(tuple(t.shape) for t in batch), format_shapes(tuple(e.shape) for e in example)
        raise InputError(f"{path}: a batch of shape {got} does not split into items of the example's shape "
                         f"{want}: give N times the example's batch along dim 0, or {_CALIBRATION_FIX}")
    return list(zip(*(t.split(step) for t in batch)))


def _as_input_tuple(obj, what: str) -> tuple[torch.Tensor, ...]:
    items = (obj,) if isinstance(obj, torch.Tensor) else obj
    if not isinstance(items, (tuple, list)) or not items or not all(
            isinstance(t, torch.Tensor) for t in items):
        raise InputError(f"{what}: holds {type(obj).__name__}, not a tensor or a tuple of tensors: "
                         "give the model's positional inputs as a tuple of tensors")
    return tuple(items)


def _random_inputs(module: nn.Module, shapes: Shapes) -> tuple[torch.Tensor, ...]:
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(s, generator=gen, dtype=dtype) for s in shapes)


def _check_forward(spec: str, module: nn.Module, inputs, inputs_from: str) -> None:
    """Run the model once: a wrong shape fails here, with the shape named, not deep in tracing."""
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as e:  # the model's own error, whatever its type, is what the user needs
        shapes = format_shapes(tuple(t.shape) for t in inputs)
        fix = ("pass --input-shape with the shape the model expects, " + _SHAPE_HINT
               if not inputs_from.startswith("--example-inputs")
               else "pass --example-inputs that fit the model, or --input-shape")
        raise InputError(
            f"{spec}: the model rejects example inputs of shape {shapes} ({inputs_from}): "
            f"{type(e).__name__}: {_first_line(e)}; {fix}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
