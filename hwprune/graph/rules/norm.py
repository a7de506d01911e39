"""Normalizations. Per-channel statistics (batch, instance norm) cut freely; group norm cuts
whole groups; layer and RMS norm normalize over their dims, so those stay (see --prune-hidden)."""
from __future__ import annotations

import numpy as np
import torch

from . import Coupling, Freeze, Link, identity_all, rule, same

aten = torch.ops.aten


def _per_channel(op, x, out, params) -> Coupling:
    links = identity_all(x, out, op.rank(x))
    links += [same(p, 0, x, 1) for p in params if p is not None]
    return Coupling(tuple(links))


@rule(aten.batch_norm.default, aten.instance_norm.default)
def batch_norm(op):
    """Statistics from the input (batch norm in training mode, instance norm) are taken over every
    dim but the channels (batch and positions; instance norm keeps the batch). Where such a dim is
    a channel of something else (weight standardization: a conv's fan-in as the positions of
    F.batch_norm(w.reshape(1, O, -1), training=True)), cutting it changes the statistics: frozen."""
    x = op.t(0)
    c = batch_norm_hidden(op)
    if not op.arg(5, "training" if op.target == aten.batch_norm.default else "use_input_stats"):
        return c
    over = [d for d in range(op.rank(x)) if d != 1 and (d != 0 or op.target == aten.batch_norm.default)]
    why = (f"{op.target.__name__.split('.')[0]} at {op.where} takes its statistics over this dim, so cutting it "
           "is not mask-equivalent (hidden-size pruning is opt-in)")
    return c._replace(freezes=tuple(Freeze((x, d), why) for d in over))


def batch_norm_hidden(op):
    """--prune-hidden: statistics over a cut dim run over the channels that stay."""
    return _per_channel(op, op.t(0), op.out, [op.t(i) for i in (1, 2, 3, 4)])


@rule(aten._native_batch_norm_legit_no_training.default)
def batch_norm_no_training(op):
    x, (out, *stats) = op.t(0), op.outs()
    c = _per_channel(op, x, out, [op.t(i) for i in (1, 2, 3, 4)])
    stat_links = tuple(same(s, 0, x, 1) for s in stats if op.rank(s) == 1 and op.shape(s)[0] == op.shape(x)[1])
    stat_free = tuple((s, d) for s in stats for d in range(op.rank(s)))
    return c._replace(links=c.links + stat_links, free=stat_free)


@rule(aten.group_norm.default)
def group_norm(op):
    """Each group's statistics run over its channels, so a group is cut whole. With one group
    they run over every channel, as a layer norm's do: frozen, with the reason (cut under
    prune_hidden, `group_norm_hidden`), not one unit that no cut can take and no report names."""
    x, groups = op.t(0), op.arg(1)
    c = op.shape(x)[1]
    coupling = _per_channel(op, x, op.out, [op.t(2), op.t(3)])
    if groups == 1:
        why = ("group_norm with one group normalizes over every channel, so cutting one is not "
               "mask-equivalent (hidden-size pruning is opt-in)")
        return coupling._replace(freezes=(Freeze((x, 1), why),))
    per = c // groups
    whole = Link((x, 1), (x, 1), np.arange(c), (np.arange(c) // per) * per)  # a group goes as one
    return coupling._replace(links=coupling.links + (whole,))


def group_norm_hidden(op):
    """--prune-hidden: one group's channels are cut like any other (the statistics then run over
    fewer, checked by output fidelity); more groups are still cut whole."""
    c = group_norm(op)
    return c._replace(freezes=())


@rule(aten.layer_norm.default, aten.rms_norm.default)
def layer_norm(op):
    x, shape = op.t(0), list(op.arg(1))
    rx, k = op.rank(x), len(shape)
    links = [same(x, d, op.out, d) for d in range(rx)]
    freezes = []
    for j in range(k):
        d = rx - k + j
        freezes.append(Freeze((x, d), f"{op.target.__name__.split('.')[0]} normalizes over this dim, so "
                                      "cutting it is not mask-equivalent (hidden-size pruning is opt-in)"))
        links += [same(p, j, x, d) for p in (op.t(2), op.t(3)) if p is not None]
    return Coupling(tuple(links), tuple(freezes))


def layer_norm_hidden(op):
    """--prune-hidden: the normalized dims are cut like any other; the statistics then run over
    fewer channels, so the result is checked by output fidelity, not mask equivalence."""
    c = layer_norm(op)
    return c._replace(freezes=())


def hidden_rules() -> tuple:
    """(op, rule) pairs that replace the built-in ones under --prune-hidden: norms and the means
    and variances of hand-written RMSNorms (Llama, T5) no longer freeze the hidden size."""
    from .reduce import mean_hidden
    norms = [(op, layer_norm_hidden) for op in (aten.layer_norm.default, aten.rms_norm.default)]
    norms += [(aten.group_norm.default, group_norm_hidden)]
    norms += [(op, batch_norm_hidden) for op in (aten.batch_norm.default, aten.instance_norm.default)]
    means = [(op, mean_hidden) for op in (aten.mean.dim, aten.var.correction, aten.var.dim, aten.var_mean.correction)]
    return tuple(norms + means)
