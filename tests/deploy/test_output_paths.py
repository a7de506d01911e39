"""Output paths that are symbolic links, or that point at or into an input, are refused by every
command that writes, before any work, and --force does not lift the refusal.

Oracle: exit code 2, one stderr line `hwprune: error: ...` naming the path, what is wrong and
what to do; and the working directory unchanged, links included (a link is compared by where
it points, a file by its bytes).
"""
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from hwprune.cli import main
from hwprune.deploy.outputs import StagedOutputs
from hwprune.io import OutputError, atomic_write, check_output

from models_for_cli import TinyConvNet

TINY = "models_for_cli:tiny_convnet"
LINK = ["link.pt", "is a symbolic link (to real.pt)", "Give the real path"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """real.pt and links to it, an input model with a hard link and a linked folder leading to it,
    a data folder with a link into it, a report for apply."""
    (tmp_path / "real.pt").write_bytes(b"an earlier result")
    (tmp_path / "link.pt").symlink_to("real.pt")
    (tmp_path / "link.json").symlink_to("real.pt")
    (tmp_path / "dangling.pt").symlink_to("nowhere.pt")
    torch.save(TinyConvNet(), tmp_path / "tiny.pt")
    os.link(tmp_path / "tiny.pt", tmp_path / "hard.pt")
    (tmp_path / "here").symlink_to(".")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.pt").write_bytes(b"data")
    (tmp_path / "into-data").symlink_to("data")
    (tmp_path / "report.json").write_text(json.dumps({"kept": {}}))
    (tmp_path / "b.onnx").symlink_to("real.pt")  # the ONNX file of a bundle named after -o b.pt
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / ".cache"))
    return tmp_path


def _snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if ".cache" in Path(rel).parts:
                continue
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


FINETUNE = ["finetune", TINY, "--teacher", TINY, "--data", "data"]
SPARSIFY = ["sparsify", TINY, "--sparsity", "0.5"]
SLIM = ["slim", TINY, "--ratio", "0.5"]

ROWS = [
    # every output option of every command that writes, onto a link
    pytest.param([*SLIM, "-o", "link.pt"], LINK, id="slim-o"),
    pytest.param([*SLIM, "-o", "link.pt", "--force"], LINK, id="slim-o-force"),
    pytest.param([*SLIM, "-o", "dangling.pt"], ["dangling.pt", "symbolic link (to nowhere.pt)"], id="slim-dangling"),
    pytest.param([*SLIM, "-o", "s.pt", "--report", "link.pt"], LINK, id="slim-report"),
    pytest.param([*SLIM, "-o", "s.pt", "--onnx", "link.pt"], LINK, id="slim-onnx"),
    pytest.param([*SLIM, "-o", "s.pt", "--html", "link.pt"], LINK, id="slim-html"),
    pytest.param([*SLIM, "-o", "s.pt", "--pt2", "link.pt"], LINK, id="slim-pt2"),
    pytest.param(["slim", TINY, "--target", "jetson", "-o", "b.pt"], ["b.onnx", "symbolic link (to real.pt)"],
                 id="slim-bundle-onnx"),
    pytest.param(["apply", "report.json", TINY, "-o", "link.pt"], LINK, id="apply-o"),
    pytest.param(["analyze", TINY, "--json", "link.pt"], LINK, id="analyze-json"),
    pytest.param(["bench", TINY, "--json", "link.pt"], LINK, id="bench-json"),
    pytest.param(["profile", TINY, "--target", "cpu", "--out", "link.json"],
                 ["link.json", "is a symbolic link (to real.pt)"], id="profile-out"),
    pytest.param([*FINETUNE, "-o", "link.pt"], LINK, id="finetune-o"),
    pytest.param([*FINETUNE, "-o", "out.pt", "--record", "link.json"], ["link.json", "symbolic link"],
                 id="finetune-record"),
    pytest.param([*SPARSIFY, "-o", "link.pt"], LINK, id="sparsify-o"),
    pytest.param([*SPARSIFY, "-o", "s.pt", "--report", "link.pt"], LINK, id="sparsify-report"),
    pytest.param([*SPARSIFY, "-o", "s.pt", "--onnx", "link.pt"], LINK, id="sparsify-onnx"),
    pytest.param([*SPARSIFY, "-o", "s.pt", "--pt2", "link.pt"], LINK, id="sparsify-pt2"),
    # onto an input: the same name, a hard link, a path through a linked folder
    pytest.param(["slim", "tiny.pt", "--trust-pickle", "--ratio", "0.5", "-o", "hard.pt", "--force"],
                 ["hard.pt", "is the input tiny.pt (the same file)", "never modifies its inputs"], id="slim-hardlink"),
    pytest.param(["slim", "tiny.pt", "--trust-pickle", "--ratio", "0.5", "-o", "here/tiny.pt", "--force"],
                 ["here/tiny.pt", "is the input tiny.pt"], id="slim-through-linked-folder"),
    pytest.param(["apply", "report.json", TINY, "-o", "report.json", "--force"],
                 ["report.json", "is the input report.json"], id="apply-onto-its-report"),
    pytest.param(["analyze", "tiny.pt", "--json", "tiny.pt", "--force"], ["tiny.pt", "is the input tiny.pt"],
                 id="analyze-onto-model"),
    pytest.param([*SPARSIFY, "--example-inputs", "data/x.pt", "-o", "data/x.pt", "--force"],
                 ["data/x.pt", "is the input data/x.pt"], id="sparsify-onto-example-inputs"),
    # into an input folder (recovery data), directly or through a link
    pytest.param([*FINETUNE, "-o", "data/out.pt"], ["data/out.pt", "lies inside data, a folder this run reads",
                                                    "outside data"], id="finetune-into-data"),
    pytest.param([*FINETUNE, "-o", "into-data/out.pt"], ["into-data/out.pt", "lies inside data"],
                 id="finetune-into-data-through-link"),
    pytest.param([*FINETUNE, "-o", "out.pt", "--record", "data/r.json"], ["data/r.json", "lies inside data"],
                 id="finetune-record-into-data"),
]


@pytest.mark.parametrize("argv, fragments", ROWS)
def test_an_output_that_is_a_link_or_an_input_is_refused_before_any_work(workdir, capsys, monkeypatch,
                                                                          argv, fragments):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded although an output is refused")
    monkeypatch.setattr("hwprune.cli.common.load_spec", no_work)
    monkeypatch.setattr("hwprune.load.load_spec", no_work)
    before = _snapshot(workdir)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwprune: error: "), err
    missing = [f for f in fragments if f not in err[0]]
    assert not missing, err[0]
    assert _snapshot(workdir) == before


def _write(path):
    return lambda: atomic_write(path, lambda tmp: tmp.write_bytes(b"new"), force=True)


def _stage(outputs, **kw):
    return lambda: StagedOutputs(outputs, force=True, **kw)


API_ROWS = [
    pytest.param(lambda d: _write(d / "link.pt"), ["link.pt", "symbolic link"], id="atomic_write"),
    pytest.param(lambda d: lambda: check_output(d / "link.pt", force=True), ["symbolic link"], id="check_output"),
    pytest.param(lambda d: _stage({"hf": d / "here"}, folders=("hf",)), ["here", "symbolic link (to .)"],
                 id="folder-output-link"),
    pytest.param(lambda d: _stage({"hf": d / "data"}, folders=("hf",), inputs=[d / "data" / "x.pt"]),
                 ["data", "holds the input", "does not contain"], id="folder-output-holds-input"),
    pytest.param(lambda d: _stage({"model": d / "into-data" / "m.pt"}, inputs=[d / "data"]),
                 ["into-data/m.pt", "lies inside", "a folder this run reads"], id="staged-into-input-folder"),
]


@pytest.mark.parametrize("make, fragments", API_ROWS)
def test_the_writers_refuse_links_and_inputs_with_force(workdir, make, fragments):
    before = _snapshot(workdir)
    with pytest.raises(OutputError) as info:
        make(workdir)()
    missing = [f for f in fragments if f not in str(info.value)]
    assert not missing, str(info.value)
    assert _snapshot(workdir) == before


def test_a_real_file_beside_links_is_still_written(workdir):
    """The checks refuse what they should and no more: a parent folder reached through a link is
    fine when it leads to no input."""
    (workdir / "out").mkdir()
    (workdir / "to-out").symlink_to("out")
    atomic_write(workdir / "to-out" / "a.bin", lambda tmp: tmp.write_bytes(b"new"))
    assert (workdir / "out" / "a.bin").read_bytes() == b"new"
    assert (workdir / "link.pt").is_symlink() and (workdir / "real.pt").read_bytes() == b"an earlier result"
