"""plan_layers: per layer, the form (width, BSR, 2:4) that keeps the most weight energy within
the latency budget, from an injected latency model (the measured one is checked for shape only)."""
from __future__ import annotations

import pytest
import torch

from hwprune.errors import InputError
from hwprune.sparse.choose import _energy_kept, measured_cpu_latency, plan_layers
from sparse_util import flops_model, mlp


# (speedup, BSR efficiency, 2:4 speedup, expected kind for fc1, why fragment)
CASES = [
    (2.0, 1.0, 1.0, "bsr", "<= budget"),        # BSR as fast as dense per FLOP: finer units keep more
    (2.0, 0.25, 1.0, "width", "<= budget"),     # BSR too slow at every kept fraction that fits
    (1.5, 0.25, 1.6, "2:4", "<= budget"),       # a 2:4 kernel faster than the budget keeps the most
    (100.0, 1.0, 1.0, "dense", "kept dense: no form meets the budget"),  # nothing fits: it stays dense
]


def _checkerboard_mlp():
    """fc1's energy sits in half of its 16x16 blocks, a checkerboard: every row holds the same
    energy (width keeps what it keeps rows of), while half the blocks hold nearly all of it."""
    model, inputs = mlp()
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(128), torch.arange(64), indexing="ij")
    big = ((rows // 16 + cols // 16) % 2 == 0)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.randn(128, 64, generator=g) * torch.where(big, 1.0, 0.01))
    return model, inputs


@pytest.mark.parametrize("speedup, efficiency, two_four, kind, why", CASES)
def test_choice_keeps_the_most_importance_within_budget(speedup, efficiency, two_four, kind, why):
    model, inputs = _checkerboard_mlp()
    choices = plan_layers(model, inputs, speedup=speedup, layers="fc1",
                          latency=flops_model(efficiency, two_four), block=16)
    (c,) = choices
    assert c.layer == "fc1" and c.tokens == 4 and c.shape == (128, 64)
    assert c.chosen.kind == kind and why in c.why
    fits = [x for x in c.candidates if x.latency_ms <= c.budget_ms]
    if fits:
        assert c.chosen.importance_kept == max(x.importance_kept for x in fits)
    else:  # the fastest is named, and the layer kept whole
        assert c.chosen == c.candidates[0] and c.chosen.kind == "dense"
        fastest = min(c.candidates, key=lambda x: x.latency_ms)
        assert f"the fastest, {fastest.kind} keeping {fastest.keep:.0%}" in c.why


def test_energy_kept_is_the_fraction_of_squared_norm():
    w = torch.zeros(32, 32)
    w[:16, :16] = 2.0  # one of four 16x16 blocks holds all the energy
    assert _energy_kept(w, "bsr", 0.25, 16) == pytest.approx(1.0)
    assert _energy_kept(w, "width", 0.5, 16) == pytest.approx(1.0)
    assert _energy_kept(w, "width", 0.25, 16) == pytest.approx(0.5)
    assert _energy_kept(w, "2:4", 0.5, 16) == pytest.approx(0.5)  # equal weights: 2 of every 4
    assert _energy_kept(torch.tensor([[3.0, 0.0, 1.0, 0.0]]), "2:4", 0.5, 16) == pytest.approx(1.0)


def test_measured_latency_model_gives_times_for_every_form():
    latency = measured_cpu_latency(block=16, rounds=1)
    for kind, keep in (("dense", 1.0), ("width", 0.5), ("bsr", 0.5), ("2:4", 0.5)):
        assert latency(kind, 8, 64, 64, keep) > 0


def test_measured_sweep_times_a_layers_forms_together_and_caches_them():
    latency = measured_cpu_latency(block=16, rounds=3)
    forms = [("dense", 8, 64, 64, 1.0), ("width", 8, 64, 64, 0.5), ("bsr", 8, 64, 64, 0.25), ("2:4", 8, 64, 64, 0.5)]
    times = latency.sweep(forms)
    assert len(times) == 4 and all(t > 0 for t in times)
    assert times[3] == times[0]  # 2:4 has no CPU kernel: it is the dense layer's time, not a second draw of it
    assert latency.sweep(forms) == times and latency("width", 8, 64, 64, 0.5) == times[1]  # cached


def test_refusals():
    model, inputs = mlp()
    with pytest.raises(InputError, match="speedup 1.0: give a per-layer latency speedup above 1"):
        plan_layers(model, inputs, speedup=1.0, latency=flops_model(1.0))
    with pytest.raises(InputError, match="layers 'conv\\*' match no linear or 1x1 conv layer"):
        plan_layers(model, inputs, speedup=2.0, layers="conv*", latency=flops_model(1.0))
