"""Multiply-accumulates per op, from tensor shapes (so the same count serves before and after)."""
from __future__ import annotations

import math

import torch

from .rules.conv import CONVS

aten = torch.ops.aten


_TRANSPOSED = {aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input}


def _conv(shape, node):
    x, w = shape(node.args[0]), shape(node.args[1])
    transposed = node.target in _TRANSPOSED or (node.target == aten.convolution.default and bool(node.args[6]))
    if transposed:  # each input element scatters into out-per-group * kernel outputs
        return math.prod(x) * math.prod(w[1:])
    return math.prod(shape(node)) * math.prod(w[1:])


def _linear(shape, node):
    return math.prod(shape(node)) * shape(node.args[1])[1]


def _matmul(shape, node):
    a = node.args[1] if node.target in (aten.addmm.default, aten.baddbmm.default) else node.args[0]
    return math.prod(shape(node)) * shape(a)[-1]


def _sdpa(shape, node):
    q, k = shape(node.args[0]), shape(node.args[1])
    return math.prod(q) * k[-2] + math.prod(shape(node)) * k[-2]


MAC_RULES = {
    **{op: _conv for op in (*CONVS, aten.convolution.default, *_TRANSPOSED)},
    aten.linear.default: _linear,
    **{op: _matmul for op in (aten.matmul.default, aten.mm.default, aten.bmm.default,
                              aten.addmm.default, aten.baddbmm.default)},
    aten.scaled_dot_product_attention.default: _sdpa,
}


def count_macs(graph, shape_of) -> int:
    """Sum of MACs over the traced graph; shape_of(tensor id) gives the shape to count with."""
    shape = lambda n: shape_of(n.name)  # noqa: E731
    return int(sum(MAC_RULES[n.target](shape, n) for n in graph.nodes
                   if n.op == "call_function" and n.target in MAC_RULES))
