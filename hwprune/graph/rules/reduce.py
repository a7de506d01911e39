"""Reductions and ops that carry no channels: sums drop the reduced dim (a zeroed channel adds
nothing); means, maxima and variances over a channel dim would change, so they freeze it."""
from __future__ import annotations

import torch

from . import Coupling, Freeze, rule, same

aten = torch.ops.aten


def _reduce(op, dims, keepdim: bool, reduced_ok: bool, why: str) -> Coupling:
    x = op.t(0)
    outs = op.outs() if isinstance(op.node.meta.get("val"), (list, tuple)) else [op.out]  # var_mean: two
    rank = op.rank(x)
    dims = sorted({op.dim(d, x) for d in (dims if dims not in (None, []) else range(rank))})
    links, freezes, free, j = [], [], [], 0
    for d in range(rank):
        if d in dims:
            if reduced_ok:
                free.append((x, d))
            else:
                freezes.append(Freeze((x, d), f"{why} at {op.where}"))
            if keepdim:
                freezes += [Freeze((out, j), "a reduced dim", "position") for out in outs]
                j += 1
            continue
        links += [same(x, d, out, j) for out in outs]
        j += 1
    return Coupling(tuple(links), tuple(freezes), tuple(free))


@rule(aten.sum.dim_IntList, aten.sum.default, aten.nansum.default)
def sum_(op):
    return _reduce(op, op.arg(1, "dim"), bool(op.arg(2, "keepdim", False)), True, "")


@rule(aten.linalg_vector_norm.default)
def vector_norm(op):
    return _reduce(op, op.arg(2, "dim"), bool(op.arg(3, "keepdim", False)), True, "")


@rule(aten.mean.dim, aten.mean.default, aten.var.correction, aten.var.dim, aten.std.dim,
      aten.std.correction, aten.amax.default, aten.amin.default, aten.logsumexp.default,
      aten.var_mean.correction)
def mean(op):
    name = str(op.target).split(".")[1]
    return _reduce(op, op.arg(1, "dim"), bool(op.arg(2, "keepdim", False)), False,
                   f"{name} over this dim depends on how many channels it has")


def mean_hidden(op):
    """--prune-hidden: a mean over channels (RMSNorm's) is taken over the channels that stay."""
    return _reduce(op, op.arg(1, "dim"), bool(op.arg(2, "keepdim", False)), True, "")


@rule(aten.max.dim, aten.min.dim, aten.argmax.default, aten.argmin.default)
def max_dim(op):
    x = op.t(0)
    dim = op.dim(op.arg(1, "dim", 0), x)
    keep = bool(op.arg(2, "keepdim", False))
    outs = op.outs() if isinstance(op.node.meta.get("val"), (list, tuple)) else [op.out]
    links, freezes = [], [Freeze((x, dim), f"{op.target} at {op.where} picks among this dim's elements")]
    for o in outs:
        j = 0
        for d in range(op.rank(x)):
            if d == dim and not keep:
                continue
            if d == dim:
                freezes.append(Freeze((o, j), "a reduced dim", "position"))
            else:
                links.append(same(x, d, o, j))
            j += 1
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int, aten._assert_tensor_metadata.default,
      aten.sym_constrain_range_for_size.default, aten._assert_scalar.default, aten.size.default,
      aten.dim.default, aten.numel.default)
def metadata(op):
    """Reads sizes or checks metadata: touches no element."""
    return Coupling(free=tuple((t, d) for t in op.tensor_inputs() for d in range(op.rank(t))))


@rule(aten.arange.default, aten.arange.start, aten.arange.start_step, aten.zeros.default,
      aten.ones.default, aten.full.default, aten.empty.memory_format, aten.scalar_tensor.default,
      aten.rand.default, aten.randn.default, aten.tensor.default)
def creation(op):
    why = f"{op.target} at {op.where} makes a tensor whose size is fixed in forward"
    return Coupling(freezes=tuple(Freeze((op.out, d), why) for d in range(op.rank(op.out))))
