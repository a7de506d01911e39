"""Micro-benchmarks of the pass's own speed on small models (seconds each); the study on
ResNet-50, ConvNeXt-T and ViT-B/16 is bench_pass_speed.py.

    pytest benchmarks/micro_pass.py --benchmark-only --benchmark-group-by=param:model

Stages: analyze (trace and group), slim from that analysis at ratio 0.5 with L2 (score, plan,
cut, verify), and Torch-Pruning's build + step at the same ratio for reference, each on a
fresh copy of the model (made outside the timed call).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
import torchvision

import hwprune

MODELS = {"resnet18": (1, 3, 64, 64), "mobilenet_v2": (1, 3, 64, 64)}
ROUNDS = 3  # a pass takes about a second here: three rounds keep a benchmark seconds long


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    torch.manual_seed(0)
    net = torchvision.models.get_model(request.param, weights=None).eval()
    return request.param, net, torch.randn(*MODELS[request.param])


def fresh(net):
    return (copy.deepcopy(net),), {}


def bench_analyze(benchmark, model):
    name, net, x = model
    analysis = benchmark.pedantic(lambda m: hwprune.analyze(m, x), setup=lambda: fresh(net), rounds=ROUNDS)
    assert analysis.prunable


def bench_slim_verified(benchmark, model):
    name, net, x = model
    analysis = hwprune.analyze(copy.deepcopy(net), x)
    slim, report = benchmark.pedantic(lambda: hwprune.slim(analysis.fresh(), ratio=0.5, importance="l2"),
                                      rounds=ROUNDS)
    assert report["verify"]["passed"] and report["params"]["after"] < report["params"]["before"]


def bench_torch_pruning(benchmark, model):
    name, net, x = model

    def prune(m):
        logits = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]  # left whole, as hwprune does
        tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                             ignored_layers=[logits]).step()
        return m
    pruned = benchmark.pedantic(prune, setup=lambda: fresh(net), rounds=ROUNDS)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
