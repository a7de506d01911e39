"""Ops over spatial positions that keep batch and channel dims: pooling, interpolation."""
from __future__ import annotations

import torch

from . import Coupling, positions, rule, same

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
