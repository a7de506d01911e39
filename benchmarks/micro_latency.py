"""Micro-benchmarks of latency-model prediction on a few layers (seconds each); how well the
predictions match measurements is the study bench_latency_prediction.py.

    pytest benchmarks/micro_latency.py --benchmark-only

- analytic: the analytic GPU model (H200 spec, fp16) pricing every kernel of a small conv net;
- table: a measured latency table pricing the same kernels by lookup (its entries filled first);
- measure: onnxruntime CPU timing one 3x3 conv kernel, as `hwprune profile` fills a table entry.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.analytic import GPU_SPECS
from hwprune.hardware.latency import AnalyticLatency, MeasuredLatency
from hwprune.hardware.lut import LatencyTable
from hwprune.hardware.measure import OrtRuntime, OrtSettings


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Conv2d(64, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 10)).eval()
    return onnx_graph(net, (torch.randn(1, 3, 32, 32),))


def bench_analytic(benchmark, graph):
    lm = AnalyticLatency(GPU_SPECS["h200-sxm"], "fp16")
    blocks = lm.blocks(graph)
    prediction = benchmark(lm.predict, blocks)
    assert prediction.total_ms > 0 and all(k.source == "analytic" for k in prediction.kernels)


def bench_table(benchmark, graph):
    lm = MeasuredLatency(LatencyTable({"target": "micro"}), None)
    blocks = lm.blocks(graph)
    for i, b in enumerate(blocks):
        lm.table.put(b.key, {"ms": 0.01 * (i + 1)})  # placeholder times: the lookup is what is timed
    prediction = benchmark(lm.predict, blocks)
    assert {k.source for k in prediction.kernels} <= {"table", "free"}


def bench_measure_one_kernel(benchmark, graph):
    runtime = OrtRuntime(get_target("cpu"), OrtSettings(threads=1, max_s=0.3, min_repeats=10))
    lm = MeasuredLatency(LatencyTable(runtime.identity()), runtime)
    conv = next(b for b in lm.blocks(graph) if "Conv" in b.ops)  # onnxruntime fuses it: FusedConv
    timing = benchmark.pedantic(runtime.kernel, args=(conv,), rounds=3)
    assert timing.median_ms > 0
