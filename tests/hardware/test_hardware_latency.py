"""Kernels (fused blocks), latency tables and their files, interpolation, and the analytic
model over a graph. Structural goldens where shapes are the point; no timed assertions."""
from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.analytic import GPU_SPECS
from hwprune.hardware.blocks import Tensor, channels, onnx_blocks, runtime_graph, with_channels
from hwprune.hardware.latency import AnalyticLatency, MeasuredLatency, separable, sweep_key
from hwprune.hardware.lut import LatencyTable, LatencyTableError, fit_calibration
from hwprune.hardware.measure import OrtRuntime, OrtSettings

FAST = OrtSettings(threads=1, warmup_s=0.005, max_s=0.05, min_repeats=5)


class Residual(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.flatten(self.conv(x), 1).sum(1, keepdim=True)


# one row per kernel shape the tables must see: (model, input shape, expected block ops in order)
BLOCK_CASES = [
    ("conv-bn-relu", lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()), (1, 3, 8, 8),
     ["FusedConv"]),
    ("residual", Residual, (1, 16, 8, 8), ["FusedConv", "Conv+Add+Relu"]),
    ("depthwise-relu6", lambda: nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.ReLU6()), (1, 8, 8, 8),
     ["FusedConv"]),
    ("linear-gelu", lambda: nn.Sequential(nn.Linear(16, 32), nn.GELU()), (2, 16), ["Gemm", "Gelu"]),
    ("flatten-is-a-view", Flat, (1, 3, 6, 6), ["Conv", "Flatten", "ReduceSum"]),
    # Resize's scales are a float constant that sets the output's size: kept, not made random
    ("upsample", lambda: nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2)), (1, 3, 4, 4),
     ["Conv", "Resize"]),
]


@pytest.mark.parametrize("name, build, shape, ops", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_blocks_are_the_kernels_onnxruntime_runs(name, build, shape, ops):
    torch.manual_seed(0)
    graph = onnx_graph(build().eval(), (torch.randn(*shape),))
    blocks = onnx_blocks(runtime_graph(graph))
    assert [b.ops for b in blocks] == ops
    for b in blocks:  # each block alone is a model onnxruntime runs at the shapes it has inside
        out = ort.InferenceSession(b.to_model().SerializeToString(), providers=["CPUExecutionProvider"]) \
            .run(None, b.feeds())
        assert [tuple(o.shape) for o in out] == [t.shape for t in b.outputs]


def test_key_depends_on_shapes_not_on_weights():
    def blocks(seed, shape=(1, 3, 8, 8)):
        torch.manual_seed(seed)
        return onnx_blocks(onnx_graph(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval(), (torch.randn(*shape),)))
    assert [b.key for b in blocks(0)] == [b.key for b in blocks(1)]
    assert [b.key for b in blocks(0)] != [b.key for b in blocks(0, (1, 3, 9, 9))]


@settings(max_examples=15, deadline=None)
@given(c_in=st.integers(1, 24), c_out=st.integers(1, 24), depthwise=st.booleans())
def test_with_channels_gives_a_runnable_kernel_of_those_channels(c_in, c_out, depthwise):
    groups = 12 if depthwise else 1
    model = nn.Sequential(nn.Conv2d(12, 12, 3, groups=groups), nn.BatchNorm2d(12), nn.ReLU()).eval()
    (block,) = onnx_blocks(runtime_graph(onnx_graph(model, (torch.randn(1, 12, 7, 7),))))
    assert channels(block).coupled == depthwise
    c_in = c_out if depthwise else c_in
    resized = with_channels(block, c_in, c_out)
    # one channel in, one out, one group: depthwise and dense are the same conv
    assert channels(resized) == type(channels(block))(c_in, c_out, depthwise and c_out > 1)
    out = ort.InferenceSession(resized.to_model().SerializeToString(), providers=["CPUExecutionProvider"]) \
        .run(None, resized.feeds())
    assert out[0].shape == (1, c_out, 5, 5)
    if not (depthwise and c_out == 1):  # a 1-channel depthwise conv is a dense one: its own sweep
        assert sweep_key(resized) == sweep_key(block)  # every width of one layer shares its sweep


# ---------------------------------------------------------------- tables and files

def _table(tmp_path, **identity):
    ident = {"target": "cpu", "runtime": "onnxruntime 1.0", "processor": "p", "isa": ["avx2"], "threads": 1}
    return LatencyTable(ident | identity, path=tmp_path / "lut.json")


def test_table_file_round_trip(tmp_path):
    t = _table(tmp_path)
    t.overhead_ms = 0.01
    t.put("k1", {"ops": "Conv", "desc": "Conv(1x3x8x8)", "ms": 0.5, "sweep": "s", "channels": [3, 8]})
    t.add_calibration("m", 1.0, 1.2)
    t.save()
    back = LatencyTable.load(t.path, expect=t.identity)
    assert back.to_json() == t.to_json() and back.sweep("s") == [(3, 8, 0.5)]


@pytest.mark.parametrize("field, value", [("processor", "another cpu"), ("runtime", "onnxruntime 9.9"),
                                          ("isa", ["avx512f"]), ("threads", 4), ("target", "cuda")])
def test_a_table_from_elsewhere_is_refused_naming_the_difference(tmp_path, field, value):
    t = _table(tmp_path)
    t.save()
    with pytest.raises(LatencyTableError, match=f"measured with {field}"):
        LatencyTable.load(t.path, expect=t.identity | {field: value})


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not a readable latency table"),
    ('{"format": "something-else"}', "is not a hwprune latency table"),
    ('{"format": "hwprune-latency-table", "version": 99, "identity": {}, "entries": {}}', "version 99"),
    ('{"format": "hwprune-latency-table", "version": 1, "identity": {}, "entries": {"k": {"ms": -1}}}',
     "entry k has no valid 'ms'"),
])
def test_a_damaged_table_is_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LatencyTableError, match=reason):
        LatencyTable.load(path)


def test_a_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(LatencyTableError, match="no such latency table"):
        LatencyTable.load(tmp_path / "nope.json")


def test_calibration_fits_the_scale_through_the_runtime_overhead():
    cal = fit_calibration([(10.0, 8.1), (20.0, 16.1)], overhead_ms=0.1)
    assert cal.scale == pytest.approx(0.8) and cal.offset_ms == 0.1 and cal.points == 2
    assert fit_calibration([], 0.1).apply(5.0) == pytest.approx(5.1)


def test_separable_interpolation_is_exact_on_measured_widths_and_hand_computed_between():
    # sweeps through the full width (16, 32): t(C_in, 32) and t(16, C_out)
    points = [(16, 32, 4.0), (16, 16, 2.0), (8, 32, 3.0)]
    assert separable(points, 16, 16) == 2.0
    assert separable(points, 8, 16) == pytest.approx(3.0 * 2.0 / 4.0)
    assert separable(points, 12, 24) == pytest.approx(3.5 * 3.0 / 4.0)
    assert separable([], 8, 8) is None


# sweeps as single measurements give them: a dip at one width (noise); rows: what the
# fitted line gives where a piecewise join would give the dip
SWEEP_CASES = [
    # (points, query, full, coupled, expected)
    # least squares through the four: slope 0.0675, intercept -0.1; the corner's time times
    # the line's ratio between the widths (0.44 / 0.98), not the dip (0.3)
    ("a dip is not bought", [(8, 16, 1.0), (8, 4, 0.25), (8, 8, 0.3), (8, 12, 0.75)], (8, 8), (8, 16), False,
     1.0 * 0.44 / 0.98),
    ("a fall with the width is noise: flat", [(8, 16, 1.0), (8, 8, 1.2)], (8, 8), (8, 16), False, 1.0),
    ("depthwise: along the diagonal", [(8, 8, 1.0), (16, 16, 2.0), (32, 32, 4.0)], (24, 24), None, True, 3.0),
    # two layers share one kernel shape family: 4->16 and 16->4; a 4->12 layer is priced from
    # the sweeps through its own corner (4, 16), not the other layer's
    ("the layer's own corner", [(4, 16, 4.0), (4, 8, 2.0), (2, 16, 2.0), (16, 4, 4.0), (16, 2, 2.0), (8, 4, 2.0)],
     (4, 12), (4, 16), False, 3.0),
    ("without a corner: the narrowest one above", [(4, 16, 4.0), (4, 8, 2.0), (2, 16, 2.0), (16, 4, 4.0),
                                                   (16, 2, 2.0), (8, 4, 2.0)], (4, 12), None, False, 3.0),
]


@pytest.mark.parametrize("name, points, query, full, coupled, expected", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_sweeps_are_read_through_fitted_lines(name, points, query, full, coupled, expected):
    assert separable(points, *query, full, coupled) == pytest.approx(expected)


def test_a_mask_is_fed_as_runs_not_random_bits():
    # a Where on random bits mispredicts every branch: MiniLM's ran twice its time in place
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    (block,) = onnx_blocks(onnx_graph(model, (torch.randn(2, 4),)))
    cond = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [64])
    fake = type(block)(block.nodes, (Tensor("c", (64,), onnx.TensorProto.BOOL, None),), block.outputs, block.opset)
    assert cond.name in fake.feeds() and not fake.feeds()["c"].any()
    assert fake.key != type(block)(block.nodes, (Tensor("c", (64,), onnx.TensorProto.FLOAT, None),),
                                   block.outputs, block.opset).key


def test_an_imported_table_without_the_kernel_or_its_sweep_names_the_kernel(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    blocks = onnx_blocks(onnx_graph(model, (torch.randn(1, 3, 8, 8),)))
    lm = MeasuredLatency(_table(tmp_path, target="jetson-orin-nano", runtime="tensorrt 10"))  # imported
    with pytest.raises(LatencyTableError, match=r"no time for kernel Conv\+Relu"):
        lm.predict(blocks)


def test_measuring_fills_the_table_once(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    table = _table(tmp_path)
    lm = MeasuredLatency(table, OrtRuntime(get_target("cpu"), FAST))
    blocks = lm.blocks(onnx_graph(model, (torch.randn(1, 3, 8, 8),)))
    first = lm.predict(blocks)
    assert {k.source for k in first.kernels} == {"measured"} and len(table.entries) == len(blocks)
    again = lm.predict(blocks)
    assert {k.source for k in again.kernels} == {"table"} and again.kernels_ms == first.kernels_ms


# ---------------------------------------------------------------- analytic over a graph

@pytest.mark.parametrize("target", ["jetson-orin-nano", "jetson-agx-orin-int8", "cuda"])
def test_analytic_prediction_never_falls_when_channels_grow(target):
    t = get_target(target)
    lm = AnalyticLatency(GPU_SPECS[t.gpu], t.precision)
    times = []
    for c in (8, 16, 40, 64, 65, 128):
        model = nn.Sequential(nn.Conv2d(16, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 16, 3, padding=1)).eval()
        times.append(lm.predict(lm.blocks(onnx_graph(model, (torch.randn(1, 16, 56, 56),)))).total_ms)
    assert times == sorted(times) and times[0] < times[-1]


# ---------------------------------------------------------------- TensorRT (on the device only)

@pytest.mark.gpu
def test_tensorrt_times_a_kernel_on_the_attached_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is optional and not installed here")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from hwprune.hardware.tensorrt import TensorRTRuntime
    runtime = TensorRTRuntime(get_target("cuda"))
    (block,) = onnx_blocks(onnx_graph(nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU()).eval(),
                                      (torch.randn(1, 16, 32, 32),)))
    timing = runtime.kernel(block)
    assert timing.median_ms > 0 and timing.repeats == 200
    assert runtime.identity()["runtime"].startswith("tensorrt ")
