"""hwprune.finetune on a sparsified model: the loss falls and the pattern sparsify proved is the
pattern after training (zeros of dense layers stay zero, BSR layers keep their blocks)."""
from __future__ import annotations

import io

import pytest
import torch
from sparse_util import mlp

import hwprune
from hwprune.recover.data import TensorItems
from hwprune.sparse import BSRLinear
from hwprune.sparse.keep import MARK

LAYERS = ("fc1", "fc2")


def _pattern(model) -> dict:
    """Where each layer's weight is zero, and for BSR layers which blocks are stored."""
    out = {}
    for name in LAYERS:
        layer = model.get_submodule(name)
        if isinstance(layer, BSRLinear):
            out[name] = (layer.crow_indices.clone(), layer.col_indices.clone(), layer.dense_weight().eq(0))
        else:
            out[name] = (layer.weight.detach().eq(0),)
    return out


def _weights(model) -> dict:
    return {n: (m.dense_weight() if isinstance(m, BSRLinear) else m.weight.detach()).clone()
            for n, m in model.named_modules() if n in LAYERS}


def _roundtrip(model):
    """What `hwprune sparsify` writes and `hwprune finetune` reads: torch.save of the module."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


# (pattern, sparsity, kept layers reported by the record, through a torch.save round trip)
CASES = [
    ("unstructured", 0.75, {"unstructured": 2}, False),
    ("unstructured", 0.75, {"unstructured": 2}, True),
    ("2:4", None, {"2:4": 2}, False),
    ("block:16", 0.75, {}, False),  # BSR stores only the kept blocks: nothing to re-apply
    ("block:32", 0.5, {}, True),
]


@pytest.mark.parametrize("pattern, sparsity, patterns, saved", CASES)
def test_finetune_keeps_the_pattern_and_lowers_the_loss(pattern, sparsity, patterns, saved):
    model, inputs = mlp()
    sparse, _ = hwprune.sparsify(model, inputs, sparsity=sparsity, pattern=pattern, layers="fc*",
                                 scope="layer")  # global would empty fc2, whose weights are smaller
    if saved:
        sparse = _roundtrip(sparse)
    before, weights = _pattern(sparse), _weights(sparse)
    data = TensorItems((torch.randn(256, 64, generator=torch.Generator().manual_seed(1)),), None, "random rows")
    trained, record = hwprune.finetune(sparse, model, data,
                                       config=hwprune.RecoverConfig(steps=25, batch_size=16, lr=3e-3, warmup=2))
    assert record.eval_after["total"] < 0.8 * record.eval_before["total"], (record.eval_before, record.eval_after)
    after = _pattern(trained)
    for name in LAYERS:
        assert all(torch.equal(a, b) for a, b in zip(before[name], after[name])), f"{name}'s pattern changed"
        assert not torch.equal(_weights(trained)[name], weights[name]), f"{name} did not train"
    assert record.zeros_kept.get("patterns", {}) == patterns


def _fc1_width_fc2_two_four(kind, tokens, in_f, out_f, keep):
    """A latency model under which fc1 is best narrowed and fc2 (96 outputs) best 2:4, whatever
    its inputs (so that fc1's cut alone does not bring it within budget)."""
    work = tokens * (128 if out_f == 96 else in_f) * out_f * 1e-6
    return {"dense": work, "width": work * keep, "bsr": work * keep * 4,
            "2:4": work / 2.5 if out_f == 96 else work}[kind]


def test_finetune_keeps_the_forms_chosen_per_layer():
    model, inputs = mlp()
    sparse, report = hwprune.sparsify(model, inputs, speedup=2, block=16, latency=_fc1_width_fc2_two_four)
    assert [r["chosen"] for r in report["layers"]] == ["width", "2:4", "dense"]
    before, weights = _pattern(sparse), _weights(sparse)
    data = TensorItems((torch.randn(256, 64, generator=torch.Generator().manual_seed(1)),), None, "random rows")
    trained, record = hwprune.finetune(sparse, model, data,
                                       config=hwprune.RecoverConfig(steps=25, batch_size=16, lr=3e-3, warmup=2))
    assert record.eval_after["total"] < 0.8 * record.eval_before["total"], (record.eval_before, record.eval_after)
    assert record.zeros_kept["patterns"] == {"2:4": 1}
    assert trained.fc1.out_features == sparse.fc1.out_features < 128  # the width cut stays cut
    for name in LAYERS:
        assert all(torch.equal(a, b) for a, b in zip(before[name], _pattern(trained)[name])), f"{name}'s pattern"
        assert not torch.equal(_weights(trained)[name], weights[name]), f"{name} did not train"


def test_without_the_mark_the_zeros_move():
    """The control: the same run on a layer sparsify did not mark trains its zeros away."""
    model, inputs = mlp()
    sparse, _ = hwprune.sparsify(model, inputs, sparsity=0.75, pattern="unstructured", layers="fc*")
    for name in LAYERS:
        delattr(sparse.get_submodule(name), MARK)
    zeros = sparse.fc1.weight.detach().eq(0)
    data = TensorItems((torch.randn(64, 64),), None, "random rows")
    trained, record = hwprune.finetune(sparse, model, data, config=hwprune.RecoverConfig(steps=3, batch_size=16))
    assert record.zeros_kept == {}
    assert trained.fc1.weight.detach()[zeros].abs().max() > 0
