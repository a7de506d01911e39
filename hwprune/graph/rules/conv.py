"""Convolutions: dense, grouped (equal cut per group), depthwise (whole groups), transposed."""
from __future__ import annotations

import numpy as np
import torch

from . import Coupling, Link, positions, rule, same

aten = torch.ops.aten
# the convolutions that are not transposed, besides aten.convolution (which says it in an argument)
CONVS = (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
         aten.conv1d.padding, aten.conv2d.padding, aten.conv3d.padding)
_SPATIAL = "spatial positions and kernel taps are not channels"


def _conv_coupling(op, x, w, b, out, groups: int, transposed: bool) -> Coupling:
    rank = op.rank(x)
    links = [same(x, 0, out, 0)]
    freezes = positions(x, range(2, rank), _SPATIAL) + positions(out, range(2, rank), _SPATIAL)
    freezes += positions(w, range(2, op.rank(w)), _SPATIAL)
    c_in, c_out = op.shape(x)[1], op.shape(out)[1]
    cpg, opg = c_in // groups, c_out // groups
    w_in, w_out = (0, 1) if transposed else (1, 0)  # which weight dim holds in / out channels
    if b is not None:
        links.append(same(out, 1, b, 0))
    if groups == 1:
        return Coupling(tuple(links + [same(x, 1, w, w_in), same(w, w_out, out, 1)]), tuple(freezes))
    if cpg == 1 and (opg == 1 or not transposed):
        # depthwise: input channel g and its output block form one unit; whole groups go
        links.append(Link((x, 1), (out, 1), np.repeat(np.arange(c_in), opg), np.arange(c_out)))
        links.append(same(w, 0, x if transposed else out, 1))
        freezes += positions(w, [1], "a depthwise kernel has one input channel per group")
        return Coupling(tuple(links), tuple(freezes))
    # grouped: every group drops the same local channels, so `groups` stays valid
    links += [
        Link((x, 1), (x, 1), np.arange(c_in), np.arange(c_in) % cpg),
        Link((out, 1), (out, 1), np.arange(c_out), np.arange(c_out) % opg),
    ]
    if transposed:
        links += [same(x, 1, w, 0), Link((out, 1), (w, 1), np.arange(c_out), np.arange(c_out) % opg)]
    else:
        links += [same(w, 0, out, 1), Link((x, 1), (w, 1), np.arange(c_in), np.arange(c_in) % cpg)]
    return Coupling(tuple(links), tuple(freezes))


@rule(*CONVS)
def conv(op):
    return _conv_coupling(op, op.t(0), op.t(1), op.t(2, "bias"), op.out, op.arg(6, "groups", 1), False)


@rule(aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input)
def conv_transpose(op):
    return _conv_coupling(op, op.t(0), op.t(1), op.t(2, "bias"), op.out, op.arg(6, "groups", 1), True)


@rule(aten.convolution.default)
def convolution(op):
    return _conv_coupling(op, op.t(0), op.t(1), op.t(2), op.out, op.arg(8, "groups", 1), bool(op.arg(6)))
