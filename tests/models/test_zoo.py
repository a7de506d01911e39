"""The whole torchvision zoo at ratio 0.5 with L2: mask-equivalent, same output shapes, fewer
parameters wherever a group is prunable, and an ONNX export that onnxruntime agrees with.

Models get randomized BN parameters and data-calibrated statistics (tests/zoo_util.py) so
that outputs are not ~0 and the relative-error check has teeth. Inputs are the smallest the
architecture accepts, to keep the suite inside CI's time.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision import models

import hwprune
from hwprune.export.onnx import export_onnx
from zoo_util import realistic

CLASSIFICATION = models.list_models(module=models)
SEGMENTATION = models.list_models(module=models.segmentation)

# architectures that need a fixed input size (position embeddings, window partitions)
INPUT_SIZE = {"vit": 224, "swin": 224, "maxvit": 224, "inception": 160}
XFAIL: dict = {}


def input_size(name: str) -> int:
    return next((s for k, s in INPUT_SIZE.items() if name.startswith(k)), 64)


def _params(name: str):
    marks = [pytest.mark.xfail(reason=XFAIL[name], strict=True)] if name in XFAIL else []
    return pytest.param(name, marks=marks, id=name)


def build(name: str) -> torch.nn.Module:
    """Random weights; segmentation builders would download backbone weights unless told not to."""
    extra = {"weights_backbone": None} if name in SEGMENTATION else {}
    return models.get_model(name, weights=None, **extra).eval()


@pytest.mark.zoo
@pytest.mark.parametrize("name", [_params(n) for n in CLASSIFICATION + SEGMENTATION])
def test_zoo_model(name, tmp_path):
    torch.manual_seed(0)
    model = build(name)
    x = (torch.randn(1, 3, input_size(name), input_size(name)),)
    realistic(model, x)
    with torch.inference_mode():
        before = [t.shape for t in torch.utils._pytree.tree_leaves(model(*x))]

    slim, report = hwprune.slim(model, x, ratio=0.5, importance="l2")

    assert report["trace"] == "torch.export"
    assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4, report["verify"]
    with torch.inference_mode():
        after = [t.shape for t in torch.utils._pytree.tree_leaves(slim(*x))]
    assert after == before
    assert isinstance(slim, type(model))
    prunable = [g for g in report["groups"] if g["frozen"] is None]
    assert prunable, "no prunable group"
    assert all(g["width_after"] < g["width_before"] for g in prunable if g["width_before"] >= 2)
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]

    onnx = export_onnx(slim, x, tmp_path / f"{name}.onnx")
    assert onnx["max_rel_err"] <= 1e-4
