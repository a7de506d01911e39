"""What hwprune refuses to run: code in a .pt2 file (without --trust-pickle), remote code of
Hugging Face models (trust_remote_code is never set); and what it says where it runs the user's
code (a package.module:factory spec, in every --help that takes one).

Oracles:
- .pt2: files crafted to run code in each of the four ways torch.export.load can (a pickled
  weight, a pickled opaque constant, a shape expression that sympify evaluates, compiled
  AOTInductor code). Each payload writes a marker file. Without --trust-pickle, the load fails
  naming the file and the flag, and the marker is absent; with it, the marker appears (the
  payload is live, so its absence means something).
- trust_remote_code: the source never sets it to anything but False; a save_pretrained folder
  whose config.json points at a modeling file (auto_map) loads without importing that file.
- --help: the printed help of every command that takes a spec or DATA says the factory's code
  runs.
(A torch.save pickle refused without --trust-pickle, with the file and the flag named, is the
"pickle-untrusted" row of test_cli's BAD_INPUTS.)
"""
import ast
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch

from hwprune.cli import main
from hwprune.errors import ModelLoadError
from hwprune.load import load_spec

from models_for_cli import TinyConvNet

ROOT = Path(__file__).resolve().parents[2]
RUNS_CODE = "IMPORTS pkg.module AND RUNS factory(): your code"


# ---------------------------------------------------------------- .pt2 files run no code

class _Payload:
    """Unpickling this writes `marker`: the code a hostile file would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _export(path: Path, dynamic: bool = False) -> None:
    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=2, max=64)},)} if dynamic else {}
    program = torch.export.export(TinyConvNet().eval(), (torch.randn(2, 3, 16, 16),), strict=False, **kw)
    torch.export.save(program, path)


def _edit(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    edit(entries)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _entry(entries: dict, suffix: str) -> str:
    return next(n for n in entries if n.endswith(suffix))


def _pickled_weight(path: Path, marker: Path) -> None:
    _export(path)

    def edit(entries):
        config = _entry(entries, "model_weights_config.json")
        data = json.loads(entries[config])
        data["config"]["features.0.weight"]["use_pickle"] = True
        entries[config] = json.dumps(data).encode()
        buf = io.BytesIO()
        torch.save(_Payload(marker), buf)
        entries[_entry(entries, "data/weights/weight_0")] = buf.getvalue()
    _edit(path, edit)


def _opaque_constant(path: Path, marker: Path) -> None:
    from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX
    _export(path)

    def edit(entries):
        config = _entry(entries, "model_constants_config.json")
        name = OPAQUE_OBJ_FILENAME_PREFIX + "0"
        entries[config] = json.dumps({"config": {"c": {"path_name": name, "is_param": False, "use_pickle": True,
                                                       "tensor_meta": None}}}).encode()
        entries[config.replace("model_constants_config.json", name)] = pickle.dumps(_Payload(marker))
    _edit(path, edit)


def _shape_expression(path: Path, marker: Path) -> None:
    _export(path, dynamic=True)
    symbol = b"Symbol('s77', positive=True, integer=True)"
    payload = f"exec(\\\"open({str(marker)!r}, 'w').write('ran')\\\") or ".encode() + symbol

    def edit(entries):
        graph = _entry(entries, "models/model.json")
        assert symbol in entries[graph]  # the dynamic batch size, as torch 2.14 writes it
        entries[graph] = entries[graph].replace(symbol, payload)
    _edit(path, edit)


def _compiled_code(path: Path, marker: Path) -> None:
    _export(path)

    def edit(entries):
        top = next(iter(entries)).split("/")[0]
        entries[f"{top}/data/aotinductor/model/model.so"] = b"\x7fELF (a shared library torch would load)"
    _edit(path, edit)


HOSTILE = [
    pytest.param(_pickled_weight, "pickled weights or constants", True, id="pickled-weight"),
    pytest.param(_opaque_constant, "a pickled object", True, id="opaque-constant"),
    pytest.param(_shape_expression, "not plain arithmetic", True, id="shape-expression"),
    pytest.param(_compiled_code, "AOTInductor compiled code", False, id="compiled-code"),  # not a real library
]


@pytest.mark.parametrize("craft, what, runs_when_trusted", HOSTILE)
def test_a_pt2_that_would_run_code_is_refused_without_trust_pickle(tmp_path, craft, what, runs_when_trusted):
    path, marker = tmp_path / "hostile.pt2", tmp_path / "marker"
    craft(path, marker)
    with pytest.raises(ModelLoadError) as info:
        load_spec(str(path))
    message = str(info.value)
    assert str(path) in message and what in message and "pass --trust-pickle" in message, message
    assert not marker.exists()
    if runs_when_trusted:  # the payload is live: torch.export.load runs it
        try:
            load_spec(str(path), trust_pickle=True)
        except Exception:  # what the payload left behind need not load; that it ran is the point
            pass
        assert marker.read_text() == "ran"


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
def test_a_plain_pt2_loads_without_trust_pickle(tmp_path, dynamic):
    _export(tmp_path / "m.pt2", dynamic=dynamic)
    loaded = load_spec(str(tmp_path / "m.pt2"))
    program = torch.export.load(tmp_path / "m.pt2")  # our own file: the unguarded reader is the reference
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded.module(x), program.module()(x))
    assert loaded.family == "torch.export"


def test_the_guards_are_lifted_after_a_refused_read(tmp_path):
    import os

    import sympy
    _pickled_weight(tmp_path / "h.pt2", tmp_path / "marker")
    before = pickle.loads, pickle.load, sympy.sympify, os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    with pytest.raises(ModelLoadError):
        load_spec(str(tmp_path / "h.pt2"))
    assert (pickle.loads, pickle.load, sympy.sympify, os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")) == before


# ---------------------------------------------------------------- trust_remote_code

def test_trust_remote_code_is_never_set_in_hwprune():
    """Every mention of trust_remote_code in the source, as a keyword, a dict key or a name."""
    found = []
    for path in sorted((ROOT / "hwprune").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                ok = isinstance(node.value, ast.Constant) and node.value.value is False
            elif isinstance(node, ast.Constant) and node.value == "trust_remote_code":
                ok = False
            elif isinstance(node, (ast.Name, ast.Attribute)) and "trust_remote_code" in ast.unparse(node):
                ok = False
            else:
                continue
            if not ok:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
    assert "trust_remote_code" not in (ROOT / "hwprune" / "hf.py").read_text()  # the one module that loads HF


def test_a_pretrained_folder_pointing_at_remote_code_loads_without_running_it(tmp_path):
    import hwprune
    from hwprune.hf import small_model

    model, _ = small_model("bert")
    model.save_pretrained(tmp_path)
    marker = tmp_path / "marker"
    (tmp_path / "modeling_hostile.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                                  "from transformers import BertModel as HostileModel\n")
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_hostile.HostileModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = hwprune.load_pretrained(tmp_path)
    assert type(loaded).__name__ == type(model).__name__
    assert not marker.exists()


# ---------------------------------------------------------------- --help says factories run code

HELP = [  # command, how many places of its help speak of a factory spec
    pytest.param(["slim"], 2, id="slim"),  # SPEC and --recover DATA
    pytest.param(["analyze"], 1, id="analyze"),
    pytest.param(["apply"], 1, id="apply"),
    pytest.param(["sparsify"], 1, id="sparsify"),
    pytest.param(["profile"], 1, id="profile"),
    pytest.param(["bench"], 2, id="bench"),  # SPEC and SLIM.pt
    pytest.param(["finetune"], 4, id="finetune"),  # SLIM.pt, --teacher, --data, and the description of DATA
]


@pytest.mark.parametrize("command, options", HELP)
def test_help_says_that_a_factory_spec_runs_your_code(capsys, command, options):
    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.count(RUNS_CODE) == options, text


def _options():
    from hwprune.cli import build_parser
    for sub in build_parser()._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            yield sub.prog, "/".join(action.option_strings) or action.dest, action.help or ""


def test_every_option_that_names_a_factory_spec_says_it_runs_code():
    taking = [(prog, name, help) for prog, name, help in _options() if re.search(r"\.module:factory", help)]
    assert len(taking) >= len(HELP)  # every command has one
    silent = [f"{prog} {name}" for prog, name, help in taking if RUNS_CODE not in help]
    assert silent == []
