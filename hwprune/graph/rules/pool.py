"""Ops over spatial positions that keep batch and channel dims: pooling, interpolation."""
from __future__ import annotations

import torch

from . import Coupling, block, positions, rule, same

aten = torch.ops.aten

_SPATIAL_OPS = [
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "lp_pool1d", "lp_pool2d",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
    "upsample_bilinear2d", "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa",
    "_upsample_nearest_exact2d", "_upsample_bicubic2d_aa", "grid_sampler", "grid_sampler_2d",
    "replication_pad2d", "reflection_pad2d", "replication_pad1d", "reflection_pad1d",
]


def _overloads(names):
    for name in names:
        packet = getattr(aten, name, None)
        for ov in (packet.overloads() if packet is not None else []):
            yield getattr(packet, ov)


@rule(*_overloads(_SPATIAL_OPS))
def spatial(op):
    """(N, C, *spatial) -> (N, C, *spatial'): channels pass through one to one."""
    x = op.t(0)
    outs = op.outs() if isinstance(op.node.meta.get("val"), (list, tuple)) else [op.out]
    rank = op.rank(x)
    lead = 2 if rank >= 4 or "1d" in str(op.target) and rank == 3 else 1  # unbatched (C, H, W) keeps 1
    links, freezes = [], positions(x, range(lead, rank), "spatial positions")
    for o in outs:
        links += [same(x, d, o, d) for d in range(lead)]
        freezes += positions(o, range(lead, op.rank(o)), "spatial positions")
    grid = [t for t in op.tensor_inputs() if t != x]
    for t in grid:
        freezes += positions(t, range(op.rank(t)), "sampling grid")
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.im2col.default, aten.col2im.default)
def unfold(op):
    """F.unfold: (N, C, H, W) -> (N, C*kh*kw, L), input channel c is the columns' block
    [c*kh*kw, (c+1)*kh*kw) (a kernel tap varies fastest); F.fold is the reverse. Taps and
    positions are not channels. VOLO's outlook attention unfolds and folds its values."""
    x, out = op.t(0), op.out
    kernel = op.arg(1 if op.target == aten.im2col.default else 2, "kernel_size")
    taps = int(kernel[0]) * int(kernel[1])
    image, cols = (x, out) if op.target == aten.im2col.default else (out, x)
    links = [same(x, 0, out, 0), block(image, 1, cols, 1, op.shape(image)[1], taps)] if op.rank(image) == 4 else [
        block(image, 0, cols, 0, op.shape(image)[0], taps)]  # unbatched (C, H, W) <-> (C*kh*kw, L)
    lead = op.rank(image) - 3
    freezes = positions(image, range(lead + 1, op.rank(image)), "spatial positions")
    freezes += positions(cols, range(lead + 1, op.rank(cols)), "spatial positions")
    return Coupling(tuple(links), tuple(freezes))
