"""The hwprune command: bad input fails with one line and exit 2 and writes nothing; good
input writes a verified model and a report.

The bad-input oracle: exit code 2, exactly one stderr line `hwprune: error: ...` that
contains every expected fragment (the thing given, what is wrong, what to do), and every
file in the working directory byte-identical afterwards, with no file added.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwprune.cli import main
from hwprune.io import OutputError, atomic_write

from models_for_cli import TinyConvNet

TESTS = Path(__file__).parent
TINY = "models_for_cli:tiny_convnet"
REPORT_KEYS = {"trace", "params", "macs", "verify", "groups", "kept", "config"}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory holding one of each kind of bad model file, made the current directory."""
    torch.manual_seed(0)
    model = TinyConvNet()
    (tmp_path / "notes.pt").write_text("these are notes, not a model\n")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    torch.save(model, tmp_path / "tiny.pt")
    whole = (tmp_path / "tiny.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "existing.slim.pt").write_bytes(b"an earlier result")
    (tmp_path / "tiny_convnet_other_seed.slim.pt").write_bytes(b"an earlier result")
    torch.save([(torch.randn(1, 3, 8, 8),)], tmp_path / "calib_small.pt")  # TINY takes 1x3x16x16
    torch.save((torch.randn(4, 3, 8, 8),), tmp_path / "calib_batch_small.pt")
    torch.save({"x": torch.randn(1, 3, 16, 16)}, tmp_path / "calib_dict.pt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _slim(*argv):
    return ["slim", *argv]


BAD_INPUTS = [
    pytest.param(_slim("missing.pt", "--ratio", "0.5"),
                 ["missing.pt", "no such file", "check the path"], id="missing-file"),
    pytest.param(_slim("notes.pt", "--ratio", "0.5", "--trust-pickle"),
                 ["notes.pt", "not a file saved with torch.save", "give a module saved"],
                 id="text-file"),
    pytest.param(_slim("weights.pt", "--ratio", "0.5"),
                 ["weights.pt", "(a state_dict), not a module", "torch.save(model)", "factory"],
                 id="state-dict"),
    pytest.param(_slim("truncated.pt", "--ratio", "0.5", "--trust-pickle"),
                 ["truncated.pt", "truncated or corrupt", "save it again"], id="truncated-pt"),
    pytest.param(_slim("tiny.pt", "--ratio", "0.5"),
                 ["tiny.pt", "can run any code", "pass --trust-pickle"], id="pickle-untrusted"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--input-shape", "1,5,16,16"),
                 ["1,5,16,16", "rejects", "pass --input-shape"], id="wrong-input-shape"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--input-shape", "1,x,16"),
                 ["'1,x,16'", "not a list of positive integers", "--input-shape 1,3,224,224"],
                 id="unparsable-input-shape"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--example-inputs", "nope.pt"),
                 ["nope.pt", "no such example-inputs file", "torch.save((x,), path)"],
                 id="missing-example-inputs"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--rule", "swish"),
                 ["--rule 'swish'", "not OP=FAMILY", "--rule mylib::swish=elementwise"], id="rule-malformed"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--rule", "Swish=nonesuch"),
                 ["--rule 'Swish=nonesuch'", "no built-in rule named", "elementwise"], id="rule-unknown-family"),
    pytest.param(_slim(TINY, "--ratio", "1.0"),
                 ["ratio 1.0", "outside [0, 1)", "--ratio 0.5"], id="ratio-one"),
    pytest.param(_slim(TINY, "--ratio", "-0.1"),
                 ["ratio -0.1", "outside [0, 1)", "--ratio 0.5"], id="ratio-negative"),
    pytest.param(_slim(TINY, "--ratio", "half"),
                 ["--ratio", "invalid float value: 'half'", "hwprune slim --help"], id="ratio-text"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--importance", "l3"),
                 ["--importance", "'l3'", "hwprune slim --help"], id="unknown-importance"),
    pytest.param(_slim("models_for_cli:linear_only", "--ratio", "0.5"),
                 ["Sequential", "no prunable channel group", "analyze --explain"],
                 id="nothing-to-prune"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "-o", "existing.slim.pt"),
                 ["existing.slim.pt", "already exists", "pass --force"], id="output-exists"),
    pytest.param(_slim("models_for_cli:tiny_convnet_other_seed", "--ratio", "0.5"),
                 ["tiny_convnet_other_seed.slim.pt", "already exists", "pass --force"],
                 id="default-output-exists"),
    pytest.param(_slim("tiny.pt", "--ratio", "0.5", "--trust-pickle", "-o", "tiny.pt", "--force"),
                 ["tiny.pt", "is the input tiny.pt", "never modifies", "-o"], id="output-is-input"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "-o", "a.pt", "--report", "a.pt"),
                 ["a.pt", "same file twice", "different paths"], id="outputs-clash"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "-o", "no/such/dir/out.pt"),
                 ["no/such/dir", "does not exist", "create it"], id="output-dir-missing"),
    pytest.param(_slim("torchvision:resnet19", "--ratio", "0.5"),
                 ["torchvision:resnet19", "did you mean", "list_models()"],
                 id="unknown-torchvision-model"),
    pytest.param(_slim("models_for_cli:no_such_factory", "--ratio", "0.5"),
                 ["no callable 'no_such_factory'", "package.module:function"],
                 id="missing-factory"),
    pytest.param(_slim("models_for_cli:not_a_module", "--ratio", "0.5"),
                 ["not_a_module", "not an nn.Module", "return a module"], id="factory-not-module"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--importance", "fisher", "--calibration", "nope.pt"),
                 ["nope.pt", "no such calibration file", "torch.save("], id="calibration-missing"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--importance", "fisher", "--calibration", "notes.pt"),
                 ["notes.pt", "cannot be read as calibration inputs", "torch.save("], id="calibration-not-torch"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--importance", "fisher", "--calibration", "calib_dict.pt"),
                 ["calib_dict.pt", "holds dict", "tuple of tensors"], id="calibration-dict"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--importance", "fisher", "--calibration", "calib_small.pt"),
                 ["--calibration calib_small.pt", "(1, 3, 8, 8)", "shaped like the example inputs"],
                 id="calibration-item-shape"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--compensate", "--calibration", "calib_batch_small.pt"),
                 ["calib_batch_small.pt", "4,3,8,8", "1,3,16,16", "N times the example's batch"],
                 id="calibration-batch-shape"),
    pytest.param(_slim(TINY, "--ratio", "0.5", "--calibration", "calib_small.pt"),
                 ["calibration inputs were given (--calibration)", "importance 'auto' chose 'l2' for this run",
                  "a ratio or given widths cut every group alike", "reads only the weights", "--compensate"],
                 id="calibration-unused"),
    pytest.param(["analyze", "missing.pt"], ["missing.pt", "no such file"], id="analyze-missing"),
    pytest.param(["apply", "nope.json", TINY, "-o", "out.pt"],
                 ["nope.json", "no such report file", "hwprune slim"], id="apply-missing-report"),
    pytest.param(["apply", "notes.pt", TINY, "-o", "out.pt"],
                 ["notes.pt", "not valid JSON", "hwprune slim"], id="apply-report-not-json"),
    pytest.param(["prune", TINY], ["invalid choice: 'prune'", "hwprune --help"],
                 id="unknown-command"),
    pytest.param(_slim("models_for_cli:tiny_convnet_bf16", "--params", "0.7", "--onnx", "t.onnx"),
                 ["--onnx asks for t.onnx", "TinyConvNet holds bfloat16 weights", "cannot run",
                  "give the model in float32 or float16", "drop --onnx"], id="onnx-of-bf16"),
]


@pytest.mark.parametrize("argv, expected", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, capsys, argv, expected):
    before = _snapshot(workdir)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hwprune: error: ")
    missing = [fragment for fragment in expected if fragment not in lines[0]]
    assert not missing, lines[0]
    assert _snapshot(workdir) == before


def test_the_command_process_exits_2_with_one_line(tmp_path):
    path = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]  # works uninstalled
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    run = subprocess.run([sys.executable, "-m", "hwprune.cli", "slim", "missing.pt", "--ratio", "0.5"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "hwprune: error: missing.pt: no such file: check the path, or give torchvision:NAME, "
        "timm:NAME or package.module:factory"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- happy paths

def test_slim_writes_a_verified_model_and_its_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", TINY, "--ratio", "0.5", "-o", "tiny.slim.pt", "--report", "tiny.json"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.slim.pt"]
    report = json.loads((tmp_path / "tiny.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]
    assert report["source"] == {"spec": TINY, "family": "factory", "input_shape": "1,3,16,16",
                                "inputs_from": "inputs given by the factory spec"}
    slim_model = torch.load(tmp_path / "tiny.slim.pt", weights_only=False)
    assert sum(p.numel() for p in slim_model.parameters()) == report["params"]["after"]
    assert slim_model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert "params" in capsys.readouterr().out


def test_slim_ratio_without_a_target_notes_the_widths_off_the_lattice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI says it in its own words, not as a Python warning
        assert main(["slim", TINY, "--ratio", "0.5", "-o", "s.pt"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "note: --ratio 0.5 left 1 group(s) off the lattice of % 8 (groups 0)" in out and "Add --target" in out


def test_slim_says_where_a_budget_lands_short_of_its_goal(tmp_path, monkeypatch, capsys, land_short):
    monkeypatch.chdir(tmp_path)
    land_short({"l2"})
    import warnings

    from hwprune.errors import BudgetWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)  # the CLI says it in its own words
        assert main(["slim", "models_for_cli:jetson_convnet", "--target", "jetson-orin-nano", "--speedup", "1.5",
                     "--importance", "l2", "-o", "s.pt"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "short of the goal" in out and "note: the slim model lands at" in out and "it is written, verified" in out
    assert (tmp_path / "s.pt").is_file()


def test_slim_default_output_is_named_after_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", TINY, "--ratio", "0.25"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_convnet.slim.pt"]


def test_slim_force_replaces_an_existing_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.pt").write_bytes(b"old")
    assert main(["slim", TINY, "--ratio", "0.5", "-o", "out.pt", "--force"]) == 0
    assert isinstance(torch.load(tmp_path / "out.pt", weights_only=False), torch.nn.Module)


def test_slim_reads_a_trusted_pickle_and_leaves_it_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(TinyConvNet(), tmp_path / "tiny.pt")
    before = (tmp_path / "tiny.pt").read_bytes()
    assert main(["slim", "tiny.pt", "--ratio", "0.5", "--trust-pickle",
                 "--input-shape", "1,3,16,16"]) == 0
    assert (tmp_path / "tiny.pt").read_bytes() == before
    assert (tmp_path / "tiny.slim.pt").is_file()


def test_apply_cuts_another_checkpoint_like_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", TINY, "--ratio", "0.5", "-o", "a.pt", "--report", "a.json"]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert main(["apply", "a.json", "models_for_cli:tiny_convnet_other_seed", "-o", "b.pt"]) == 0
    applied = torch.load(tmp_path / "b.pt", weights_only=False)
    assert sum(p.numel() for p in applied.parameters()) == report["params"]["after"]


def test_analyze_explains_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", TINY, "--explain", "--json", "groups.json"]) == 0
    data = json.loads((tmp_path / "groups.json").read_text())
    assert data["trace"] in ("torch.export", "symbolic_trace")
    assert data["groups"]
    assert "frozen" in capsys.readouterr().out


def test_slim_exports_onnx_checked_in_onnxruntime(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", TINY, "--ratio", "0.5", "--onnx", "tiny.onnx", "--report", "r.json"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "tiny.onnx").stat().st_size > 0
    assert report["onnx"]["max_rel_err"] < 1e-4
    assert report["onnx"]["path"] == str(tmp_path / "tiny.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "tiny.onnx", "tiny_convnet.slim.pt"]


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_refuses_to_replace_without_force(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists: pass --force"):
        atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"old"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"), force=True)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        atomic_write(tmp_path / "out.bin", failing)
    assert list(tmp_path.iterdir()) == []


def test_slim_pt2_writes_a_pt2_of_the_cut_graph(workdir):
    """A .pt2 is its own ATen graph: the cut rewrites the graph's sizes and saves a .pt2."""
    model = TinyConvNet().eval()
    x = (torch.randn(1, 3, 16, 16),)
    torch.export.save(torch.export.export(model, x, strict=False), workdir / "tiny.pt2")
    before = (workdir / "tiny.pt2").read_bytes()
    assert main(["slim", "tiny.pt2", "--ratio", "0.5", "--report", "r.json"]) == 0
    assert (workdir / "tiny.pt2").read_bytes() == before
    report = json.loads((workdir / "r.json").read_text())
    assert report["trace"] == "exported graph" and report["verify"]["passed"]
    assert report["params"]["after"] < report["params"]["before"]
    slim = torch.export.load(workdir / "tiny.slim.pt2").module()
    assert slim(*x).shape == model(*x).shape


def test_slim_compensate_folds_means_and_apply_repeats_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["slim", TINY, "--ratio", "0.5", "--compensate", "-o", "a.pt", "--report", "a.json"]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["config"]["compensate"] and report["compensated"]["layers"] > 0
    assert report["verify"]["passed"] and "means" in report["verify"]["mode"]
    assert main(["apply", "a.json", "models_for_cli:tiny_convnet_other_seed", "-o", "b.pt"]) == 0
    assert sum(p.numel() for p in torch.load(tmp_path / "b.pt", weights_only=False).parameters()) == \
        report["params"]["after"]


CALIBRATION_FORMS = {  # what --calibration accepts: the same three inputs, saved four ways
    "list-of-tuples": lambda xs: [(x,) for x in xs.split(1)],
    "list-of-tensors": lambda xs: list(xs.split(1)),
    "batch-tuple": lambda xs: (xs,),
    "batch-tensor": lambda xs: xs,
}


@pytest.mark.parametrize("form", sorted(CALIBRATION_FORMS))
def test_slim_calibration_file_gives_the_apis_plan_and_apply_repeats_its_means(tmp_path, monkeypatch, form):
    import hwprune
    from models_for_cli import tiny_convnet
    monkeypatch.chdir(tmp_path)
    xs = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    torch.save(CALIBRATION_FORMS[form](xs), tmp_path / "calib.pt")
    assert main(["slim", TINY, "--ratio", "0.5", "--importance", "fisher", "--compensate", "--calibration",
                 "calib.pt", "-o", "a.pt", "--report", "a.json"]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["source"]["calibration"] == {"file": "calib.pt", "inputs": 3}
    model, x = tiny_convnet()
    want, want_report = hwprune.slim(model, x, ratio=0.5, importance="fisher", compensate=True,
                                     calibration=[(c,) for c in xs.split(1)])
    assert report["kept"] == json.loads(json.dumps(want_report["kept"]))
    slim = torch.load(tmp_path / "a.pt", weights_only=False)
    with torch.no_grad():
        torch.testing.assert_close(slim(*x), want(*x))
    # apply on the same checkpoint with the same inputs folds the same means
    assert main(["apply", "a.json", TINY, "--calibration", "calib.pt", "-o", "b.pt"]) == 0
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "b.pt", weights_only=False)(*x), want(*x))


def test_apply_calibration_without_compensation_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save((torch.randn(2, 3, 16, 16),), tmp_path / "calib.pt")
    assert main(["slim", TINY, "--ratio", "0.5", "-o", "a.pt", "--report", "a.json"]) == 0
    capsys.readouterr()
    assert main(["apply", "a.json", TINY, "--calibration", "calib.pt", "-o", "b.pt"]) == 2
    err = capsys.readouterr().err
    assert "--calibration calib.pt" in err and "without --compensate" in err and not (tmp_path / "b.pt").exists()


def test_slim_compensate_on_a_pt2_folds_into_the_graph_tensors(workdir):
    model = TinyConvNet().eval()
    x = (torch.randn(1, 3, 16, 16),)
    torch.export.save(torch.export.export(model, x, strict=False), workdir / "tiny.pt2")
    assert main(["slim", "tiny.pt2", "--ratio", "0.5", "--compensate", "--report", "r.json"]) == 0
    report = json.loads((workdir / "r.json").read_text())
    assert report["trace"] == "exported graph" and report["verify"]["passed"]
    assert report["compensated"]["layers"] > 0
