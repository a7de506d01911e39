"""The torch-CUDA runtime: which runtime measures a target (TensorRT / torch CUDA / none, by
what is attached), its errors, the ONNX graphs it runs as torch ops (against onnxruntime on
the CPU), its interleaved median with a fake timer, and on a CUDA GPU a real timing."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwprune.errors import InputError
from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target, tensorrt, torch_cuda
from hwprune.hardware.blocks import onnx_blocks
from hwprune.hardware.latency import local_runtime
from hwprune.hardware.measure import OrtRuntime
from hwprune.hardware.tensorrt import TensorRTRuntime
from hwprune.hardware.torch_cuda import CudaSettings, OnnxModule, TorchCudaRuntime, interleaved, time_fns


class Tiny(nn.Module):
    """conv+bn+relu, depthwise, residual add, pools, hardswish, flatten, linear: the ops a zoo CNN has."""

    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Hardswish())
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        y = self.stem(x)
        y = self.pool(self.dw(y) + y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)).softmax(-1)


class Mixer(nn.Module):
    """linear, GELU, LayerNorm, a reshape and transpose, matmul, ReLU6 (Clip), mean: a transformer's ops."""

    def __init__(self, d=16):
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.LayerNorm(d)

    def forward(self, x):
        y = self.norm(self.fc2(nn.functional.gelu(self.fc1(x))) + x)
        heads = y.reshape(y.shape[0], y.shape[1], 2, -1).transpose(1, 2)
        att = (heads @ heads.transpose(-1, -2)).softmax(-1) @ heads
        return nn.functional.relu6(att).mean(dim=1)


class Embed(nn.Module):
    """token ids through an embedding (Gather), a mask from them (Equal, Where, Cast), a slice, an unsqueeze."""

    def __init__(self, vocab=32, d=16):
        super().__init__()
        self.emb, self.fc = nn.Embedding(vocab, d), nn.Linear(d, d)

    def forward(self, ids):
        y = self.fc(self.emb(ids))
        mask = (ids == 0).unsqueeze(-1)
        y = torch.where(mask, torch.zeros_like(y), y) * ids.float().unsqueeze(-1)
        return y[:, 1:5].exp().neg()


MODELS = {"cnn": (Tiny, lambda: torch.randn(2, 3, 16, 16)), "mixer": (Mixer, lambda: torch.randn(2, 8, 16)),
          "embed": (Embed, lambda: torch.randint(0, 32, (2, 8)))}


@pytest.fixture(scope="module", params=sorted(MODELS))
def graph(request):
    cls, example = MODELS[request.param]
    return onnx_graph(cls().eval(), (example(),))  # as a GPU runtime gets it: unfused


def _attached(monkeypatch, trt: bool, cuda: bool):
    monkeypatch.setattr(tensorrt, "attached", lambda target: trt and target.gpu is not None)
    monkeypatch.setattr(torch_cuda, "available", lambda: cuda)


@pytest.mark.parametrize("target,trt,cuda,expected", [
    ("cuda", True, True, TensorRTRuntime),
    ("cuda", True, False, TensorRTRuntime),  # (TensorRT's own attached() needs CUDA too)
    ("cuda", False, True, TorchCudaRuntime),
    ("cuda", False, False, type(None)),
    ("cuda-int8", False, True, type(None)),  # torch has no int8 path here: analytic, or a LUT
    ("jetson", False, True, type(None)),  # a Jetson is measured on the device with TensorRT
    ("cpu", True, True, OrtRuntime),
])
def test_local_runtime_picks_by_what_is_attached(monkeypatch, target, trt, cuda, expected):
    _attached(monkeypatch, trt, cuda)
    assert type(local_runtime(get_target(target))) is expected


@pytest.mark.parametrize("choice,trt,cuda,expected", [
    ("torch", True, True, TorchCudaRuntime),
    ("tensorrt", True, True, TensorRTRuntime),
    ("tensorrt", False, True, "--runtime tensorrt cannot measure --target cuda here: install TensorRT"),
    ("torch", True, False, "--runtime torch cannot measure --target cuda here: run on a machine with an NVIDIA GPU"),
    ("onnx", True, True, "--runtime onnx: unknown; choose one of tensorrt, torch"),
])
def test_runtime_choice(monkeypatch, choice, trt, cuda, expected):
    _attached(monkeypatch, trt, cuda)
    if isinstance(expected, str):
        with pytest.raises(InputError, match="^" + expected.replace("(", r"\(")):
            local_runtime(get_target("cuda"), choice=choice)
    else:
        assert type(local_runtime(get_target("cuda"), choice=choice)) is expected


def test_runtime_choice_on_cpu_target_is_refused():
    with pytest.raises(InputError, match="--runtime torch with --target cpu: cpu is measured with onnxruntime"):
        local_runtime(get_target("cpu"), choice="torch")


def test_cli_bench_runtime_not_here(tmp_path, monkeypatch, capsys):
    from hwprune.cli.main import main
    _attached(monkeypatch, False, False)
    code = main(["bench", "resnet18", "--target", "cuda", "--runtime", "torch"])
    assert code == 2
    assert "--runtime torch cannot measure --target cuda here" in capsys.readouterr().err


def _ort(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_whole_graph_as_torch_ops_equals_onnxruntime(graph):
    module = OnnxModule(graph, "cpu", torch.float32)
    # token ids drawn from the vocabulary, not the runtime's zeros, so that the mask has both values
    xs = [x if x.is_floating_point() else torch.randint(0, 32, x.shape, generator=torch.Generator().manual_seed(0))
          for x in module.example("cpu", torch.float32)]
    feeds = {name: x.numpy() for (name, _, _), x in zip(module.inputs, xs)}
    for got, want in zip(module(*xs), _ort(graph, feeds)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_every_block_as_torch_ops_equals_onnxruntime(graph):
    blocks = onnx_blocks(graph)
    assert len(blocks) >= 4
    for block in blocks:
        model, feeds = block.to_model(), block.feeds()
        module = OnnxModule(model, "cpu", torch.float32)
        xs = [torch.from_numpy(feeds[name]) for name, _, _ in module.inputs]
        for got, want in zip(module(*xs), _ort(model, feeds)):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5, err_msg=block.describe())


def test_unknown_op_is_named():
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])])
    with pytest.raises(Exception, match="no torch form of ONNX op\\(s\\) NonZero: time this model with TensorRT"):
        OnnxModule(helper.make_model(g), "cpu", torch.float32)


def test_interleaved_order_and_median():
    calls = []
    cost = {"a": [3.0, 1.0, 2.0, 9.0, 2.0], "b": [5.0, 5.0, 4.0, 6.0, 5.0]}

    def timer(fn, replays):
        calls.append((fn(), replays))
        return cost[fn()][sum(1 for c, _ in calls if c == fn()) - 1] * 1e-3

    a, b = interleaved([lambda: "a", lambda: "b"], CudaSettings(rounds=5, replays=7), timer)
    assert [c for c, _ in calls] == ["a", "b"] * 5 and {r for _, r in calls} == {7}
    assert [tuple(t.to_json().values()) for t in (a, b)] == [(2.0, 1.0, 9.0, 5), (5.0, 4.0, 6.0, 5)]


def test_capture_failure_falls_back_to_eager():
    """A fn whose capture fails is timed by calling it; the others by replaying their graph."""
    class Graph:
        def __init__(self, fn):
            self.replay = lambda: ("replayed", fn())

    warmups, timed = [], []

    def capture(fn, warmup):
        warmups.append(warmup)
        return None if fn() == "b" else Graph(fn)

    def timer(fn, replays):
        timed.append(fn())
        return 1e-3

    timings, eager = time_fns([lambda: "a", lambda: "b"], CudaSettings(rounds=2, warmup=4), timer, capture)
    assert eager == [1] and warmups == [4, 4] and len(timings) == 2
    assert timed == [("replayed", "a"), "b"] * 2


@pytest.mark.parametrize("eager,mode", [([], "CUDA graphs"),
                                         (["block_1"], "CUDA graphs; eager (capture failed) for 1 graph(s): block_1")])
def test_how_names_torch_and_what_ran_eagerly(monkeypatch, eager, mode):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    runtime = TorchCudaRuntime(get_target("cuda"))
    runtime.eager = eager
    how = runtime.how()
    assert how["mode"] == mode and how["precision"] == "fp16" and how["processor"] == "NVIDIA H200"
    assert how["runtime"].startswith(f"torch {torch.__version__} CUDA") and runtime.identity()["target"] == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_gpu_wider_conv_is_slower_and_captured():
    from onnx import TensorProto, helper, numpy_helper

    def conv(c):
        w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((c, c, 3, 3)).astype(np.float32), "w")
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], f"conv{c}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, c, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, c, 56, 56])], [w])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    runtime = local_runtime(get_target("cuda"), choice="torch")
    narrow, wide = runtime.models([conv(64), conv(256)])
    assert 0 < narrow.median_ms < wide.median_ms  # 16x the MACs
    assert runtime.how()["mode"] == "CUDA graphs" and "torch" in runtime.how()["runtime"]


@pytest.mark.parametrize("command", ["profile", "bench"])
def test_cli_runtime_choices_are_the_runtimes(command):
    """--runtime's choices are written out in the CLI (so that start-up imports no runtime): they
    must stay the names local_runtime takes."""
    from hwprune.cli.main import build_parser
    from hwprune.hardware.latency import GPU_RUNTIMES, gpu_runtimes
    args = build_parser().parse_args([command, "resnet18", "--target", "cuda", "--runtime", "torch"])
    assert args.runtime == "torch"
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices[command]._actions
               if "--runtime" in a.option_strings)
    assert tuple(sub.choices) == GPU_RUNTIMES == tuple(gpu_runtimes())
