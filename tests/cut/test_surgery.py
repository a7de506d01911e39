"""Surgery on tensors held in several places: each is cut once, from the original, and stays
one tensor in the slim model; the oracle (inside hwprune.slim) checks the result."""
from __future__ import annotations

import torch
from torch import nn

import hwprune


class TiedAcrossModules(nn.Module):
    """c shares a's weight (not its bias): the tensor appears in `kept` under two names."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 16), nn.Linear(16, 4)
        self.c.weight = self.a.weight

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.d(h + self.c(self.b(h)))


def test_a_weight_tied_across_modules_is_cut_once_and_stays_tied():
    torch.manual_seed(0)
    model = TiedAcrossModules().eval()
    slim, report = hwprune.slim(model, (torch.randn(2, 8),), ratio=0.5)
    assert report["verify"]["passed"]
    assert {"a.weight", "c.weight"} <= set(report["kept"])
    assert slim.a.weight is slim.c.weight and slim.a.weight.shape == (8, 8)
    assert model.a.weight is model.c.weight and model.a.weight.shape == (16, 8)  # the input is untouched
