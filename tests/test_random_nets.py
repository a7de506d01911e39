"""Property: random small networks of conv, bn, activation, add, cat, split, pool and linear
slim at any ratio to a model that is mask-equivalent to the original (the oracle runs inside
hwprune.slim and raises otherwise) with the same output shape."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import hwprune
from hwprune.errors import NothingToPruneError
from zoo_util import realistic


class RandomNet(nn.Module):
    """Runs a straight-line program over a growing list of tensors; vals[0] is the input."""

    def __init__(self, program: list, layers: list, head_in: int):
        super().__init__()
        self.program, self.layers = program, nn.ModuleList(layers)
        self.head = nn.Linear(head_in, 5)

    def forward(self, x):
        vals = [x]
        for op, *a in self.program:
            if op == "layer":
                vals.append(self.layers[a[0]](vals[a[1]]))
            elif op == "add":
                vals.append(vals[a[0]] + vals[a[1]])
            elif op == "cat":
                vals.append(torch.cat([vals[a[0]], vals[a[1]]], 1))
            elif op == "split":
                vals.append(vals[a[0]].chunk(2, 1)[a[1]])
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(vals[-1], 1), 1))


@st.composite
def networks(draw):
    shapes = [(3, 16)]  # (channels, spatial size) of every tensor so far
    program, layers = [], []

    def layer(m, src, shape):
        program.append(("layer", len(layers), src))
        layers.append(m)
        shapes.append(shape)

    for _ in range(draw(st.integers(2, 9))):
        src = draw(st.integers(0, len(shapes) - 1))
        c, s = shapes[src]
        kind = draw(st.sampled_from(["conv", "conv", "dwconv", "bn", "act", "add", "cat", "split", "pool"]))
        same = [j for j, sh in enumerate(shapes) if sh == (c, s) and j != src]
        if kind == "conv" or (kind == "dwconv" and c < 2):
            out, k = draw(st.integers(2, 12)), draw(st.sampled_from([1, 3]))
            layer(nn.Conv2d(c, out, k, padding=k // 2), src, (out, s))
        elif kind == "dwconv":
            layer(nn.Conv2d(c, c, 3, padding=1, groups=c), src, (c, s))
        elif kind == "bn":
            layer(nn.BatchNorm2d(c), src, (c, s))
        elif kind == "act":
            act = draw(st.sampled_from([nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU]))
            layer(act(), src, (c, s))
        elif kind == "pool" and s >= 4:
            layer(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])), src, (c, s // 2))
        elif kind == "add" and same:
            program.append(("add", src, draw(st.sampled_from(same))))
            shapes.append((c, s))
        elif kind == "cat":
            other = draw(st.sampled_from([j for j, sh in enumerate(shapes) if sh[1] == s]))
            program.append(("cat", src, other))
            shapes.append((c + shapes[other][0], s))
        elif kind == "split" and c % 2 == 0:
            part = draw(st.integers(0, 1))
            program.append(("split", src, part))
            shapes.append((c // 2, s))
    return RandomNet(program, layers, shapes[-1][0]), draw(st.sampled_from([0.25, 0.5, 0.75]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_network_slims_mask_equivalent(net_and_ratio):
    net, ratio = net_and_ratio
    x = (torch.randn(2, 3, 16, 16),)
    realistic(net.eval(), x)
    try:
        slim, report = hwprune.slim(net, x, ratio=ratio)
    except NothingToPruneError:
        event("nothing to prune")
        return  # e.g. a program that only pools the input: every channel is an input channel
    assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4
    with torch.inference_mode():
        assert slim(*x).shape == net(*x).shape
    if any(g["frozen"] is None and g["width_after"] < g["width_before"] for g in report["groups"]):
        event("cut")
        assert report["params"]["after"] < report["params"]["before"]
