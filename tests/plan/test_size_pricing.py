"""Size budgets (params, flops) priced from the traced graph (hwprune.hardware.traced_blocks),
with no ONNX export, so that a model past protobuf's 2 GB prices as a small one does.

Oracle: the ONNX-priced path these budgets had before (the kernels of the model's in-memory
ONNX export, hwprune.hardware.blocks.onnx_blocks, counted by the same param_count and
mac_count), computed here for each model of the table: the same full-model figure, kernel by
kernel, and the same plan (widths per group, and so the same channels kept) at two fractions
of each kind. And a slim with a size budget exports nothing: torch.onnx.export refused, it
plans and verifies as before.
"""
from __future__ import annotations

import functools
import re

import pytest
import torch
import torchvision
from torch import nn

import hwprune
from hwprune.errors import BudgetError
from hwprune.export.onnx import onnx_graph
from hwprune.hardware.blocks import channels, onnx_blocks
from hwprune.hardware.lattice import lattice_for
from hwprune.hardware.traced_blocks import KERNELS
from hwprune.hf import small_model
from hwprune.importance.scorer import Scorer
from hwprune.plan import budget as budget_module
from hwprune.plan.allocate import solve
from hwprune.plan.budget import plan_budget
from hwprune.plan.kinds import BUDGET_KINDS, Budget
from hwprune.plan.pricing import PricedModel, counted_pricing, mac_count, param_count

from models_for_cli import lattice_convnet, tiny_convnet
from shared_models import MLP


class Mixed(nn.Module):
    """Each kernel form the exporter makes: a conv with a BatchNorm folded into it, depthwise and
    grouped convs (padding "same": aten.conv2d.padding), a 1-d conv with its own bias, linears of 3-d inputs (MatMul: bias apart), of a
    2-d input with and without a bias (Gemm, MatMul), and a matmul by a parameter."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, groups=16, padding=1, bias=False), nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, groups=4, padding="same")
        self.conv1d = nn.Conv1d(16, 24, 3)
        self.seq_in, self.seq_out = nn.Linear(24, 32), nn.Linear(32, 16)
        self.pooled_in, self.pooled_out = nn.Linear(24, 32, bias=False), nn.Linear(32, 8)
        self.proj = nn.Parameter(torch.randn(16, 8) * 0.1)

    def forward(self, x):
        y = self.grouped(self.bn2(self.dw(torch.relu(self.bn(self.stem(x))))))
        y = torch.relu(self.conv1d(y.flatten(2)))
        seq = self.seq_out(torch.relu(self.seq_in(y.transpose(1, 2)))) @ self.proj
        return seq, self.pooled_out(torch.relu(self.pooled_in(y.mean(2))))


def _inputs(*shape):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)


def _with_biases(model_and_inputs):
    """Biases drawn small, as a trained model has them: HF initializes them to zero, and the dynamo
    exporter (BERT's fallback) drops a Gemm's all-zero bias, which no trained model has."""
    model, x = model_and_inputs
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model, x


MODELS = {
    "tiny_convnet": tiny_convnet,
    "lattice_convnet": lattice_convnet,
    "mixed": lambda: (Mixed().eval(), _inputs(1, 3, 8, 8)),
    "mlp": lambda: (MLP().eval(), _inputs(2, 16)),
    "resnet18": lambda: (torchvision.models.resnet18(num_classes=10).eval(), _inputs(1, 3, 32, 32)),
    "mobilenet_v2": lambda: (torchvision.models.mobilenet_v2(num_classes=10).eval(), _inputs(1, 3, 32, 32)),
    "llama": lambda: small_model("llama"),  # 2 decoder layers, grouped-query attention
    "vit": lambda: small_model("vit"),
    "bert": lambda: _with_biases(small_model("bert")),  # exported by dynamo: its nodes carry name scopes
}
COUNTS = {"params": param_count, "flops": mac_count}
FRACTIONS = {"params": (0.5, 0.8), "flops": (0.4, 0.7)}


def test_every_kind_counted_from_the_trace_has_a_row():
    assert sorted(COUNTS) == sorted(k for k, row in BUDGET_KINDS.items() if not row.latency)


@functools.cache
def _priced(name: str):
    """(analysis, L2 scores, {kind: (the ONNX-priced Pricing, the traced one)}) of a model."""
    torch.manual_seed(0)
    model, x = MODELS[name]()
    a = hwprune.analyze(model, x)
    exported = onnx_blocks(onnx_graph(model, x))
    traced = {kind: BUDGET_KINDS[kind].pricing(PricedModel.of(a)) for kind in COUNTS}
    pricings = {kind: (counted_pricing(exported, count, traced[kind].unit), traced[kind])
                for kind, count in COUNTS.items()}
    return a, Scorer()(a), pricings


@pytest.mark.parametrize("kind", sorted(COUNTS))
@pytest.mark.parametrize("name", list(MODELS))
def test_the_full_figure_is_the_onnx_count_kernel_by_kernel(name, kind):
    _, _, pricings = _priced(name)
    onnx_priced, traced = pricings[kind]
    count = COUNTS[kind]

    def kernels(p):
        return [(b.nodes[0].op_type, channels(b), count(b, channels(b).c_in, channels(b).c_out))
                for b in p.blocks if channels(b)]
    assert kernels(traced) == kernels(onnx_priced)
    assert traced.full_figure == onnx_priced.full_figure > 0


def _plan(a, scores, kind, fraction, pricing):
    """(widths, record), or a budget's error with its kernels named by their lead op: an exported
    block names the activation fused after a conv too ("Conv+Relu(...)"), a traced one does not."""
    try:
        return plan_budget(a, scores, Budget(kind, fraction), pricing, lattice_for(None)[0])
    except BudgetError as e:
        return re.sub(r"(\w+)(?:\+\w+)+\(", r"\1(", str(e))


@pytest.mark.parametrize("kind, fraction", [(k, f) for k in sorted(COUNTS) for f in FRACTIONS[k]])
@pytest.mark.parametrize("name", list(MODELS))
def test_the_plan_is_the_onnx_priced_plan(name, kind, fraction, monkeypatch):
    # the allocator's local search stops at a deadline (10 s): where it runs that long (mobilenet_v2),
    # two plans of the same costs could stop at different moves; without it both are exact
    monkeypatch.setattr(budget_module, "solve", functools.partial(solve, kick_seconds=0.0))
    a, scores, pricings = _priced(name)
    onnx_priced, traced = pricings[kind]
    want, got = _plan(a, scores, kind, fraction, onnx_priced), _plan(a, scores, kind, fraction, traced)
    assert got == want
    if not isinstance(want, str):
        widths, record = want
        assert record["planner"]["cost_after"] <= fraction * onnx_priced.full_figure * (1 + 1e-9)
        assert any(w < a.groups[gid].width for gid, w in widths.items())  # the budget bites


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_a_size_budget_exports_nothing(kind, monkeypatch):
    onnx_figure = _priced("mixed")[2][kind][0].full_figure

    def refuse(*args, **kwargs):
        raise AssertionError("torch.onnx.export called while pricing a size budget")
    monkeypatch.setattr(torch.onnx, "export", refuse)
    model, x = MODELS["mixed"]()
    _, report = hwprune.slim(model, x, **{kind: 0.6})
    assert report["verify"]["passed"]
    assert report["plan"]["full"] == onnx_figure
    assert report["plan"]["planner"]["cost_after"] <= 0.6 * onnx_figure


def test_every_registered_kernel_is_met_by_a_model_of_the_table():
    met = {KERNELS[n.target] for name in MODELS for n in _priced(name)[0].graph.traced.graph.nodes
           if n.op == "call_function" and n.target in KERNELS}
    assert met == set(KERNELS.values()), "give a model of MODELS a kernel of each registered form"


@pytest.mark.parametrize("kind", sorted(COUNTS))
@pytest.mark.parametrize("name", ["mixed", "llama"])
def test_a_bf16_model_counts_as_its_float32_export(name, kind):
    """bf16, which onnxruntime cannot run (so no ONNX pricing of it ever worked), counts the
    figure of its float32 copy's export."""
    torch.manual_seed(0)
    model, x = MODELS[name]()
    want = _priced(name)[2][kind][0].full_figure
    half = BUDGET_KINDS[kind].pricing(PricedModel(model.to(torch.bfloat16), x if name == "llama" else
                                                  tuple(t.to(torch.bfloat16) for t in x)))
    assert half.full_figure == want
