"""sparsify(speedup=X): each layer's form chosen and applied (width through hwprune's pass,
BSR, 2:4), checked against an independent reference built here from the result's weights; width
offered only to layers coupled to one consumer alone; the latency model of each target; refusals."""
from __future__ import annotations

import copy
import re

import pytest
import torch
from sparse_util import branches, flops_model, mlp, pointwise_net, wide_mlp

import hwprune
from hwprune.errors import InputError
from hwprune.sparse import BSRLinear
from hwprune.sparse.keep import MARK
from hwprune.sparse.latency import analytic_latency, latency_for, measured_gpu_latency
from hwprune.sparse.semi_structured import is_two_four

FACTORIES = {"mlp": mlp, "pointwise": pointwise_net, "branches": branches, "wide": wide_mlp}


# (model, latency model or target, block, {layer: chosen kind}, {consumer: producer narrowing its input})
CASES = [
    ("mlp", flops_model(1.0), 16, {"fc1": "bsr", "fc2": "bsr", "head": "dense"}, {}),
    # fc1 narrowed to half: fc2, priced on the inputs left, already runs in half its time, so stays dense
    ("mlp", flops_model(0.25), 16, {"fc1": "width", "fc2": "dense", "head": "dense"}, {"fc2": "fc1"}),
    ("mlp", flops_model(0.25, 2.5), 32, {"fc1": "2:4", "fc2": "2:4", "head": "2:4"}, {}),
    # down feeds a grouped conv and fc is the output: no width. expand narrowed to half halves down, which then
    # fits as it is; fc takes BSR, which at a quarter of dense speed fits at 10% kept
    ("pointwise", flops_model(0.25), 16, {"expand": "width", "down": "dense", "fc": "bsr"}, {"down": "expand"}),
    ("branches", flops_model(0.25, 2.5), 16, {"a": "2:4", "b": "2:4", "head": "2:4"}, {}),
    ("wide", "jetson", 32, {"0": "bsr", "2": "width", "4": "dense"}, {"4": "2"}),
]


def _effective(layer) -> torch.Tensor:
    return layer.dense_weight() if isinstance(layer, BSRLinear) else layer.weight.detach().flatten(1)


def _reference(model, sparse, report):
    """The original with each planned layer's weight replaced by the result's, placed at the kept
    rows and columns (zeros elsewhere), after checking that it is the original's there, masked."""
    reference = copy.deepcopy(model)
    for row in report["layers"]:
        name, got = row["layer"], _effective(sparse.get_submodule(row["layer"]))
        kept = report["kept"].get(f"{name}.weight", {})
        rows = torch.as_tensor(kept.get("0", range(row["shape"][0])))
        cols = torch.as_tensor(kept.get("1", range(row["shape"][1])))
        weight = reference.get_submodule(name).weight
        original = weight.detach().flatten(1)[rows][:, cols]
        assert torch.equal(got, original * got.ne(0)), f"{name} is not the original's weight, masked"
        placed = torch.zeros(row["shape"])
        placed[rows.unsqueeze(1), cols.unsqueeze(0)] = got
        with torch.no_grad():
            weight.copy_(placed.view(weight.shape))
    return reference


@pytest.mark.parametrize("name, latency, block, chosen, narrowed", CASES)
def test_each_layer_gets_its_chosen_form_and_the_result_is_the_masked_original(name, latency, block, chosen,
                                                                               narrowed):
    model, inputs = FACTORIES[name]()
    before = copy.deepcopy(model.state_dict())
    how = {"target": latency} if isinstance(latency, str) else {"latency": latency}
    sparse, report = hwprune.sparsify(model, inputs, speedup=2, block=block, **how)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the original was modified"
    assert {r["layer"]: r["chosen"] for r in report["layers"]} == chosen
    assert {r["layer"]: r["input_narrowed_by"] for r in report["layers"] if "input_narrowed_by" in r} == narrowed
    assert report["config"]["mode"] == "per-layer" and report["verify"]["passed"]
    for row in report["layers"]:
        layer = sparse.get_submodule(row["layer"])
        fits = [c for c in row["candidates"] if c["latency_ms"] <= row["budget_ms"]]
        if fits:  # the most energy within the budget, and the why says what it cost
            assert row["energy_kept"] == max(c["energy_kept"] for c in fits) and "<= budget" in row["why"]
        else:
            assert row["chosen"] == "dense" and "kept dense: no form meets the budget" in row["why"]
        if "input_narrowed_by" in row:  # priced on the inputs left, against its budget at full width
            assert row["why"].startswith(f"input narrowed to {row['shape_after'][1]} of {row['shape'][1]} by "
                                         f"{row['input_narrowed_by']}'s width cut; ")
        if row["chosen"] == "bsr":
            blocks = row["shape_after"][0] * row["shape_after"][1] // block ** 2  # a narrowed input has fewer
            assert isinstance(layer, BSRLinear) and layer.block == block
            assert layer.col_indices.numel() == blocks - round((1 - row["keep"]) * blocks)
        elif row["chosen"] == "2:4":
            assert is_two_four(layer.weight) and getattr(layer, MARK) == "2:4"
        elif row["chosen"] == "width":
            assert row["shape_after"][0] == round(row["keep"] * row["shape"][0]) < row["shape"][0]
            assert report["width_cut"]["verify"]["passed"]
        else:
            assert row["shape_after"][0] == row["shape"][0] and row["sparsity"] == 0.0
    with torch.no_grad():
        torch.testing.assert_close(sparse(*inputs), _reference(model, sparse, report)(*inputs), rtol=1e-4, atol=1e-5)


def test_width_is_offered_only_to_a_layer_coupled_to_one_consumer():
    """a and b feed one sum: their output channels are one group with two producers."""
    model, inputs = branches()
    _, report = hwprune.sparsify(model, inputs, speedup=2, block=16, latency=flops_model(0.25))
    kinds = {r["layer"]: {c["kind"] for c in r["candidates"]} for r in report["layers"]}
    assert kinds == {"a": {"dense", "bsr", "2:4"}, "b": {"dense", "bsr", "2:4"}, "head": {"dense", "bsr", "2:4"}}
    model, inputs = mlp()
    _, report = hwprune.sparsify(model, inputs, speedup=2, block=16, latency=flops_model(0.25))
    assert ["width" in {c["kind"] for c in r["candidates"]} for r in report["layers"]] == [True, True, False]


def test_width_candidates_sit_on_the_block_and_lattice_multiple():
    model, inputs = wide_mlp()
    _, report = hwprune.sparsify(model, inputs, speedup=2, target="jetson", block=64)
    widths = [round(c["keep"] * 2048) for c in report["layers"][0]["candidates"] if c["kind"] == "width"]
    assert widths and all(w % 64 == 0 for w in widths) and len(set(widths)) == len(widths)


@pytest.mark.parametrize("target, source", [
    ("cpu", "measured on this CPU"),
    ("jetson", "analytic: roofline"),
    ("jetson-agx-orin-int8", "analytic: roofline"),
])
def test_each_target_has_its_latency_model(target, source):
    """An analytic model is a formula: half the width costs less. A measured one is a clock, and
    which of two timings is smaller is not a test's to assert (MEASURING.md): its row checks that
    it times the narrower layer as its own form, and gives a time for each."""
    from hwprune.hardware.targets import get_target
    from hwprune.sparse.latency import MeasuredCpuLatency
    if target != "cpu" and torch.cuda.is_available():
        pytest.skip("a GPU is attached: a GPU target is measured")
    latency, name = latency_for(get_target(target), 32)
    assert name.startswith(source)
    width, dense = ("width", 256, 512, 1024, 0.5), ("dense", 256, 512, 1024, 1.0)
    if isinstance(latency, MeasuredCpuLatency):
        assert latency.key(*width) != latency.key(*dense)
        assert all(t > 0 for t in latency.sweep([width, dense]))
    else:
        assert 0 < latency(*width) < latency(*dense)


@pytest.mark.parametrize("tokens, in_f, out_f", [(1024, 512, 2048), (4096, 4096, 4096)])
def test_analytic_bsr_estimate_follows_the_kept_blocks(tokens, in_f, out_f):
    from hwprune.hardware.analytic import GPU_SPECS
    latency = analytic_latency(GPU_SPECS["orin-nano-8gb"], "fp16", 32)
    times = [latency("bsr", tokens, in_f, out_f, keep) for keep in (1.0, 0.75, 0.5, 0.3, 0.1)]
    assert times == sorted(times, reverse=True) and times[-1] < 0.5 * times[0]
    assert times[0] == pytest.approx(latency("dense", tokens, in_f, out_f, 1.0), rel=0.05)
    assert latency("2:4", tokens, in_f, out_f, 0.5) < latency("dense", tokens, in_f, out_f, 1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measured_gpu_latency_times_every_form():
    latency = measured_gpu_latency(block=32, rounds=5)
    for kind, keep in (("dense", 1.0), ("width", 0.5), ("bsr", 0.1), ("2:4", 0.5)):
        assert latency(kind, 256, 1024, 1024, keep) > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"speedup": 2, "sparsity": 0.5}, "sparsity 0.5 with speedup 2: --sparsity/--pattern/--scope zero one pattern"),
    ({"speedup": 2, "pattern": "block:32"}, "pattern 'block:32' with speedup 2: "),
    ({"speedup": 2, "scope": "layer"}, "scope 'layer' with speedup 2: "),
    ({"sparsity": 0.5, "target": "cpu"}, "target 'cpu' without speedup: --target and --block only set how --speedup"),
    ({"sparsity": 0.5, "block": 16}, "block 16 without speedup: "),
    ({"speedup": 1.0}, "speedup 1.0: give the latency speedup each chosen layer must reach, above 1"),
    ({"speedup": 2, "block": 8}, "block 8: the BSR candidates' block must be one of 16, 32, 64"),
    ({"speedup": 2, "target": "tpu"}, "target 'tpu' is unknown"),
    ({"sparsity": 0.5, "latency": flops_model(1.0)}, "latency= prices the per-layer choice of speedup="),
    ({"speedup": 2, "layers": "encoder.*"}, "--layers 'encoder.*' matches none of the model's 3 linear"),
])
def test_refusals_name_what_was_given(kwargs, message):
    model, inputs = mlp()
    with pytest.raises(InputError, match=re.escape(message)):
        hwprune.sparsify(model, inputs, **kwargs)


def test_refusal_when_no_selected_layer_can_take_a_form():
    model, inputs = pointwise_net()
    with pytest.raises(InputError, match=re.escape("no layer matching --layers 'stem,grouped' is a linear or an "
                                                   "unpadded 1x1 conv: stem: a 3x3 conv")):
        hwprune.sparsify(model, inputs, speedup=2, layers="stem,grouped", latency=flops_model(1.0))
