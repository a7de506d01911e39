"""hwprune sparsify on the command line: outputs written only after the proof, the layer
table, ONNX in both forms, .pt2, and one-line refusals that write nothing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
import torch

from hwprune.cli import main

MLP = "sparse_util:mlp"
NET = "sparse_util:pointwise_net"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "taken.pt").write_bytes(b"an earlier result")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


BAD = [
    pytest.param([MLP, "--sparsity", "1.5"], ["sparsity 1.5", "strictly between 0 and 1"], id="sparsity-high"),
    pytest.param([MLP, "--sparsity", "0"], ["sparsity 0.0", "strictly between 0 and 1"], id="sparsity-zero"),
    pytest.param([MLP], ["sparsity None", "give the fraction of weights to zero"], id="sparsity-missing"),
    pytest.param([MLP, "--sparsity", "0.5", "--pattern", "block:8"],
                 ["pattern 'block:8' is unknown", "block:16|32|64 or 2:4"], id="unknown-pattern"),
    pytest.param([MLP, "--sparsity", "0.5", "--layers", "decoder.*"],
                 ["--layers 'decoder.*' matches none of the model's 3 linear and conv layers", "fc1, fc2, head"],
                 id="no-matching-layers"),
    pytest.param([MLP, "--sparsity", "0.5", "--pattern", "block:64", "--layers", "head"],
                 ["no layer matching --layers 'head' can take pattern block:64"], id="no-layer-fits"),
    pytest.param([MLP, "--sparsity", "0.5", "--scope", "model"], ["invalid choice: 'model'"], id="unknown-scope"),
    pytest.param([MLP, "--sparsity", "0.5", "--onnx-custom-op"], ["--onnx-custom-op needs --onnx"], id="custom-op-alone"),
    pytest.param([MLP, "--sparsity", "0.5", "-o", "taken.pt"], ["taken.pt: already exists", "--force"],
                 id="output-exists"),
    pytest.param([MLP, "--speedup", "2", "--sparsity", "0.5"], ["sparsity 0.5 with speedup 2.0", "one or the other"],
                 id="speedup-and-sparsity"),
    pytest.param([MLP, "--speedup", "2", "--pattern", "2:4"], ["pattern '2:4' with speedup 2.0", "--block"],
                 id="speedup-and-pattern"),
    pytest.param([MLP, "--sparsity", "0.5", "--target", "jetson"], ["target 'jetson' without speedup", "--speedup X"],
                 id="target-without-speedup"),
    pytest.param([MLP, "--speedup", "2", "--block", "48"], ["block 48: the BSR candidates' block must be one of"],
                 id="speedup-bad-block"),
    pytest.param([MLP, "--speedup", "0.5"], ["speedup 0.5: give the latency speedup", "above 1"], id="speedup-low"),
    pytest.param([MLP, "--speedup", "2", "--target", "jetsn"], ["target 'jetsn' is unknown", "did you mean"],
                 id="speedup-unknown-target"),
]


@pytest.mark.parametrize("argv, expected", BAD)
def test_bad_input_is_one_line_and_writes_nothing(workdir, capsys, argv, expected):
    before = _snapshot(workdir)
    assert main(["sparsify", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwprune: error: "), lines
    assert [f for f in expected if f not in lines[0]] == [], lines[0]
    assert _snapshot(workdir) == before


def test_sparsify_writes_model_report_onnx_and_pt2(workdir, capsys):
    argv = ["sparsify", NET, "--sparsity", "0.75", "--pattern", "block:16", "-o", "net.pt", "--report", "net.json",
            "--onnx", "net.onnx", "--pt2", "net.pt2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "masked-weight equivalence" in out and "hwprune::bsr_linear" in out and "skipped" in out
    report = json.loads((workdir / "net.json").read_text())
    assert [r["layer"] for r in report["layers"]] == ["expand", "down", "fc"]
    assert report["onnx"]["max_rel_err"] <= 1e-4 and report["onnx"]["form"] == "dense weights with zeros"
    assert report["pt2"]["max_rel_err"] <= 1e-4
    from sparse_util import pointwise_net
    model, inputs = pointwise_net()
    sparse = torch.load(workdir / "net.pt", weights_only=False)
    reloaded = torch.export.load(workdir / "net.pt2")
    assert sum(n.target == torch.ops.hwprune.bsr_linear.default for n in reloaded.graph.nodes) == 3
    torch.testing.assert_close(reloaded.module()(*inputs), sparse(*inputs), rtol=1e-5, atol=1e-6)
    # the original in the same file is unchanged: the written model differs from it
    assert not torch.allclose(sparse(*inputs), model(*inputs))


def test_onnx_custom_op_has_one_hwprune_node_per_bsr_layer(workdir):
    assert main(["sparsify", MLP, "--sparsity", "0.5", "--pattern", "block:32", "--onnx", "m.onnx",
                 "--onnx-custom-op", "--report", "m.json"]) == 0
    graph = onnx.load(workdir / "m.onnx").graph
    assert [n.op_type for n in graph.node if n.domain == "hwprune"] == ["BSRLinear", "BSRLinear"]
    assert json.loads((workdir / "m.json").read_text())["onnx"]["nodes"] == 2


def test_default_output_is_named_after_the_spec(workdir):
    assert main(["sparsify", MLP, "--sparsity", "0.5", "--scope", "layer", "--layers", "fc*"]) == 0
    assert (workdir / "mlp.sparse.pt").is_file()


def test_two_four_onnx_comes_with_the_sparse_weights_trtexec_command(workdir, capsys):
    assert main(["sparsify", MLP, "--pattern", "2:4", "--onnx", "m.onnx", "--report", "m.json"]) == 0
    report = json.loads((workdir / "m.json").read_text())
    assert "--sparsity=enable" in report["tensorrt"]["argv"] and report["tensorrt"]["argv"][1] == "--onnx=m.onnx"
    assert report["tensorrt"]["command"] in capsys.readouterr().out.splitlines()
    assert report["onnx"]["max_rel_err"] <= 1e-4


def test_speedup_chooses_per_layer_and_writes_after_the_proof(workdir, capsys, monkeypatch):
    """The analytic Jetson model (deterministic here): BSR for the first linear, width for the
    second (its channels feed the head alone), the head kept dense; every output checked."""
    argv = ["sparsify", "sparse_util:wide_mlp", "--speedup", "2", "--target", "jetson", "-o", "w.pt",
            "--report", "w.json", "--onnx", "w.onnx", "--pt2", "w.pt2"]
    monkeypatch.setenv("COLUMNS", "400")  # the table's lines whole, to read them
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "form chosen per layer" in out and "analytic" in out and "kept dense: no form meets" in out
    report = json.loads((workdir / "w.json").read_text())
    assert [(r["layer"], r["chosen"]) for r in report["layers"]] == [("0", "bsr"), ("2", "width"), ("4", "dense")]
    assert all(len(r["candidates"]) > 3 and r["why"] for r in report["layers"])
    assert report["verify"]["passed"] and report["onnx"]["max_rel_err"] <= 1e-4 and report["pt2"]["max_rel_err"] <= 1e-4
    from sparse_util import wide_mlp
    _, inputs = wide_mlp()
    sparse = torch.load(workdir / "w.pt", weights_only=False)
    assert sparse[2].out_features == report["layers"][1]["shape_after"][0] == sparse[4].in_features
    reloaded = torch.export.load(workdir / "w.pt2")
    assert sum(n.target == torch.ops.hwprune.bsr_linear.default for n in reloaded.graph.nodes) == 1
    torch.testing.assert_close(reloaded.module()(*inputs), sparse(*inputs), rtol=1e-4, atol=1e-5)
