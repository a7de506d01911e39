"""ONNX export: the oracle is onnxruntime against PyTorch eager, output by output."""
from __future__ import annotations

from collections import OrderedDict

import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwprune.errors import HwpruneError
from hwprune.export import export_onnx, named_outputs
from hwprune.export import onnx as hw_onnx
from hwprune.numerics import max_errors


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class DictOut(nn.Module):
    """Like torchvision segmentation: {'out', 'aux'}."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.aux = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.body(x)
        return OrderedDict(out=y.relu(), aux=self.aux(y))


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return h, self.b(h)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 12, 1)

    def forward(self, x):
        return self.pw(torch.relu(self.dw(x)))


class NestedOut(nn.Module):
    """Nested tuple/dict/list with None, the shape of HF outputs with optional fields."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 3)

    def forward(self, x):
        y = self.l(x)
        return y, {"a": y * 2, "b": None, "c": [y + 1, y.relu()]}, None


class CallCounter(nn.Module):
    """Its forward changes with every call: a trace bakes in the count, eager does not."""

    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.l(x) * self.calls


class NonFactorPool(nn.Module):
    """AdaptiveAvgPool2d to a size that does not divide the input: the TorchScript exporter refuses it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(6)

    def forward(self, x):
        return self.pool(self.conv(x))


CASES = {
    "conv_net": (ConvNet, (1, 3, 32, 32), ["output"]),
    "dict_output": (DictOut, (1, 3, 16, 16), ["out", "aux"]),
    "tuple_output": (TupleOut, (3, 6), ["0", "1"]),
    "depthwise_conv": (Depthwise, (1, 8, 16, 16), ["output"]),
    "linear": (lambda: nn.Linear(16, 5), (4, 16), ["output"]),
    "nested_output": (NestedOut, (2, 4), ["0", "1.a", "1.c.0", "1.c.1"]),
}


def _model(factory):
    torch.manual_seed(0)
    return factory().eval()


@pytest.mark.parametrize("exporter", hw_onnx.EXPORTERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_export_matches_eager(tmp_path, case, exporter):
    factory, shape, names = CASES[case]
    model, x = _model(factory), torch.randn(*shape)
    r = export_onnx(model, x, tmp_path / "m.onnx", exporter=exporter)
    assert r["path"] == str(tmp_path / "m.onnx") and r["exporter"] == exporter
    assert r["opset"] >= 17 and r["external_data"] is None
    assert [o["name"] for o in r["outputs"]] == names
    assert r["max_rel_err"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    # independent of export_onnx's own check: the written file reproduces eager
    session = ort.InferenceSession(r["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = [t for _, t in named_outputs(model(x))]
    assert all(max_errors(torch.from_numpy(g), w)[1] <= 1e-4 for g, w in zip(got, want))


def test_opset_is_what_the_file_holds(tmp_path):
    r17 = export_onnx(_model(ConvNet), torch.randn(1, 3, 16, 16), tmp_path / "a.onnx", exporter="torchscript")
    r18 = export_onnx(_model(ConvNet), torch.randn(1, 3, 16, 16), tmp_path / "b.onnx", exporter="dynamo")
    assert (r17["opset"], r18["opset"]) == (17, 18)


def test_named_outputs_flattens_like_the_exporters():
    t = torch.zeros(1)
    out = (t, OrderedDict(out=t, aux=None), [t, {"x": t}])
    assert [n for n, _ in named_outputs(out)] == ["0", "1.out", "2.0", "2.1.x"]
    with pytest.raises(HwpruneError, match=r"output 1 is a str"):
        named_outputs((t, "label"))


def test_check_fails_when_onnxruntime_disagrees(tmp_path, monkeypatch):
    real = hw_onnx.run_onnxruntime
    monkeypatch.setattr(hw_onnx, "run_onnxruntime", lambda *a: [o * 1.01 for o in real(*a)])
    with pytest.raises(HwpruneError) as info:
        export_onnx(_model(DictOut), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", exporter="torchscript")
    msg = str(info.value)
    assert "DictOut" in msg and "output out " in msg and "rtol 0.0001" in msg
    assert "max relative error 0.01" in msg and "nothing was written" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", hw_onnx.EXPORTERS)
def test_check_fails_when_trace_and_eager_differ(tmp_path, exporter):
    with pytest.raises(HwpruneError, match=r"CallCounter .* output output has max relative error"):
        export_onnx(_model(CallCounter), torch.randn(2, 4), tmp_path / "m.onnx", exporter=exporter)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing_and_keeps_the_old_file(tmp_path):
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"previous export")
    with pytest.raises(HwpruneError, match=r"NonFactorPool with the torchscript exporter failed: .*adaptive_avg_pool2d"
                                           r".* try exporter='dynamo'"):
        export_onnx(_model(NonFactorPool), torch.randn(1, 3, 16, 16), dest, exporter="torchscript")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and dest.read_bytes() == b"previous export"


def test_auto_uses_torchscript_when_it_works(tmp_path):
    r = export_onnx(_model(ConvNet), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    assert (r["exporter"], r["fallback_from"]) == ("torchscript", None)


def test_auto_falls_back_to_dynamo_and_says_why(tmp_path):
    r = export_onnx(_model(NonFactorPool), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    assert r["exporter"] == "dynamo" and r["max_rel_err"] <= 1e-4
    assert r["fallback_from"]["exporter"] == "torchscript"
    assert "adaptive_avg_pool2d" in r["fallback_from"]["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_auto_names_both_failures(tmp_path):
    with pytest.raises(HwpruneError, match=r"both ONNX exporters failed.*torchscript exporter.*dynamo exporter"):
        export_onnx(_model(CallCounter), torch.randn(2, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", hw_onnx.EXPORTERS)
def test_large_weights_go_to_one_data_file_next_to_the_model(tmp_path, monkeypatch, exporter):
    monkeypatch.setattr(hw_onnx, "EXTERNAL_DATA_BYTES", 0)  # as if the weights were over 2 GiB
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3)).eval()  # 148 KB of weights
    r = export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", exporter=exporter)
    assert r["external_data"] == str(tmp_path / "m.onnx.data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx").stat().st_size < 10_000 < 140_000 < (tmp_path / "m.onnx.data").stat().st_size
    session = ort.InferenceSession(r["path"], providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: torch.randn(1, 3, 16, 16).numpy()})
    assert out[0].shape == (1, 64, 12, 12)


def test_a_bf16_model_is_refused_before_export(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("exported a model onnxruntime cannot check")
    monkeypatch.setattr(torch.onnx, "export", refuse)
    model = ConvNet().eval().to(torch.bfloat16)
    with pytest.raises(HwpruneError, match=r"ConvNet holds bfloat16 weights, which onnxruntime's CPU provider "
                                           r"cannot run, so its export cannot be checked: export a float32 or float16 "
                                           r"copy .*nothing was written"):
        export_onnx(model, torch.randn(1, 3, 16, 16, dtype=torch.bfloat16), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype, limit, why", [
    (torch.bfloat16, hw_onnx.EXTERNAL_DATA_BYTES, "ConvNet holds bfloat16 weights, which onnxruntime's CPU provider "
                                                  "cannot run"),
    (torch.float32, 1000, "ConvNet has 0.00 GiB of weights, past the 2 GiB an in-memory ONNX graph holds"),
])
def test_the_in_memory_graph_is_refused_where_it_cannot_be_made_or_run(monkeypatch, dtype, limit, why):
    def refuse(*args, **kwargs):
        raise AssertionError("exported a graph that cannot be held or run")
    monkeypatch.setattr(torch.onnx, "export", refuse)
    monkeypatch.setattr(hw_onnx, "EXTERNAL_DATA_BYTES", limit)  # 1000 bytes: as if the weights were past 2 GiB
    with pytest.raises(HwpruneError) as e:
        hw_onnx.onnx_graph(ConvNet().eval().to(dtype), torch.randn(1, 3, 16, 16, dtype=dtype))
    assert str(e.value) == (f"{why}; latency budgets and tables time that graph: plan with --params, --flops or "
                            "--ratio (counted on the traced graph), or give a smaller or float32 model")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(HwpruneError, match="exporter 'tensorrt' is unknown"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.onnx", exporter="tensorrt")
    with pytest.raises(HwpruneError, match="does not exist"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "missing" / "m.onnx")
