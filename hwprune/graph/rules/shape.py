"""Ops that move elements without computing: reshape, permute, cat/split, slicing, padding.

A reshape is cut into chunks of in-dims and out-dims with equal products. A chunk that merges
dims maps the outer dim block-wise (flatten into a linear: channel c is features
[c*k, (c+1)*k)). A chunk that splits one dim into several can carry channels through one
factor only; which one forward computes at run time cannot be read from the trace, so the
innermost is taken (view(b, groups, -1) in a channel shuffle: exact), except where the split
feeds attention: there the outer factor is the heads and a head is cut whole (attention.py). Where forward computes
another, the cut breaks forward or changes the output, and verification freezes the group.
"""
from __future__ import annotations

import operator

import numpy as np
import torch

from . import Coupling, Freeze, Link, block, broadcast, offset, positions, rule, same
from .attention import head_split_link, splits_heads

aten = torch.ops.aten


def chunks(a: tuple, b: tuple) -> list:
    """Split two shapes of equal numel into runs of dims with equal products: [([i..], [j..]), ...]."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ia, jb = [i], [j]
        pa = a[i] if i < len(a) else 1
        pb = b[j] if j < len(b) else 1
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                pa *= a[i]; ia.append(i); i += 1
            else:
                pb *= b[j]; jb.append(j); j += 1
        out.append(([k for k in ia if k < len(a)], [k for k in jb if k < len(b)]))
    return out


@rule(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
      aten.unflatten.int, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
      aten.unsqueeze.default, aten.view_as.default, aten.reshape_as.default)
def reshape(op):
    x, out = op.t(0), op.out
    sx, so = op.shape(x), op.shape(out)
    links, freezes = _like_other(op), []
    where = f"{op.target} at {op.where}"
    round_trip = _undoes_merge(op.node, so)
    for ins, outs in chunks(sx, so):
        big_in = [d for d in ins if sx[d] > 1]
        big_out = [d for d in outs if so[d] > 1]
        freezes += positions(x, [d for d in ins if sx[d] == 1], "a size-1 dim")
        freezes += positions(out, [d for d in outs if so[d] == 1], "a size-1 dim")
        if not big_in and not big_out:
            continue
        if len(big_in) == 1 and len(big_out) == 1 and _one_head(op, outs, so, big_out[0]):
            # (.., head_dim) -> (.., 1, head_dim): a single head, whole; its head size is not a channel
            link, pos = head_split_link(x, big_in[0], out, [outs[-2], big_out[0]], so, sx[big_in[0]])
            links.append(link)
            freezes += pos
        elif len(big_in) == 1 and len(big_out) == 1:
            links.append(same(x, big_in[0], out, big_out[0]))
        elif len(big_out) == 1:  # merge: the outer in-dim carries channels block-wise
            inner = int(np.prod([sx[d] for d in big_in[1:]]))
            links.append(block(x, big_in[0], out, big_out[0], sx[big_in[0]], inner))
            freezes += [Freeze((x, d), f"{where} merges this dim into an outer one") for d in big_in[1:]]
        elif len(big_in) == 1 and len(big_out) >= 2 and splits_heads(op.node, big_out[-1]):  # (.., heads*head_dim) -> (.., heads, head_dim)
            link, pos = head_split_link(x, big_in[0], out, big_out, so, sx[big_in[0]])
            links.append(link)
            freezes += pos
        elif len(big_in) == 1 and round_trip:  # back to the shape a merge started from: the outer factor
            # carries channels, as the merge made it carry them (a weight standardized per output channel,
            # (O, I, kh, kw) -> (1, O, I*kh*kw) -> (O, I, kh, kw): input channel i is fan-in block i)
            inner = int(np.prod([so[d] for d in big_out[1:]]))
            links.append(block(out, big_out[0], x, big_in[0], so[big_out[0]], inner))
            freezes += [Freeze((out, d), f"{where} splits this dim off an outer one") for d in big_out[1:]]
        elif len(big_in) == 1:  # split: the innermost factor carries channels, as
            # channel_shuffle's view(b, groups, C // groups) computes it; a forward that computes
            # another factor breaks the cut, and verification then freezes this group by its line
            carrier, inner = big_out[-1], so[big_out[-1]]
            n = sx[big_in[0]]
            links.append(Link((x, big_in[0]), (out, carrier), np.arange(n), np.arange(n) % inner))
            why = f"{where} splits a dim of size {n} into {'x'.join(str(so[d]) for d in big_out)}; only the last factor is cut"
            freezes += [Freeze((out, d), why) for d in big_out[:-1]]
        else:
            why = f"{where} regroups dims {big_in} into {big_out}"
            freezes += [Freeze((x, d), why) for d in big_in] + [Freeze((out, d), why) for d in big_out]
    return Coupling(tuple(links), tuple(freezes))


_VIEWS = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unflatten.int)
_MERGES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints)


def _like_other(op) -> list:
    """view_as / reshape_as / expand_as(x, other): the result has other's shape, read at run time,
    so each dim of other follows the same dim of the result (a cut of one is a cut of the other)."""
    if op.target not in (aten.view_as.default, aten.reshape_as.default, aten.expand_as.default):
        return []
    other = op.t(1, "other")
    return [same(other, d, op.out, d) for d in range(op.rank(other))] if other is not None else []


def _shape(node) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _undoes_merge(node, shape: tuple, hops: int = 8) -> bool:
    """Whether node's input was made by a reshape of a tensor of `shape`, through ops that keep its
    shape (F.batch_norm(w.reshape(1, O, -1), ...).reshape_as(w): weight standardization)."""
    src = node.args[0] if node.args else None
    for _ in range(hops):
        if not isinstance(src, torch.fx.Node) or src.op != "call_function":
            return False
        first = next((a for a in src.args if isinstance(a, torch.fx.Node)), None)
        if src.target in _MERGES:
            return _shape(first) == shape and len(shape) > len(_shape(src) or ())
        if first is None or _shape(first) != _shape(src):
            return False
        src = first
    return False


def _one_head(op, outs: list, so: tuple, carrier: int) -> bool:
    """A view that puts a size-1 dim just before the channels, feeding an attention product, splits
    them into one head: view(b, n, heads, head_dim) with heads = 1. Read as a plain channel dim,
    the product's contraction would let a cut shrink head_dim, which forward writes
    (self.head_dim). An unsqueeze is a broadcast, not a head split."""
    return (op.target in _VIEWS and len(outs) >= 2 and outs[-1] == carrier and so[outs[-2]] == 1
            and splits_heads(op.node, carrier))


@rule(aten.permute.default)
def permute(op):
    x, dims = op.t(0), [op.dim(d, op.t(0)) for d in op.arg(1)]
    return Coupling(tuple(same(x, d, op.out, i) for i, d in enumerate(dims)))


@rule(aten.transpose.int, aten.swapaxes.default, aten.t.default, aten.movedim.int)
def transpose(op):
    x = op.t(0)
    order = list(range(op.rank(x)))
    if op.target == aten.t.default:
        order = order[::-1]
    elif op.target == aten.movedim.int:
        order.insert(op.dim(op.arg(2), x), order.pop(op.dim(op.arg(1), x)))
    else:
        a, b = op.dim(op.arg(1), x), op.dim(op.arg(2), x)
        order[a], order[b] = order[b], order[a]
    return Coupling(tuple(same(x, d, op.out, i) for i, d in enumerate(order)))


@rule(aten.expand.default, aten.expand_as.default)
def expand(op):
    x, out = op.t(0), op.out
    rx, ro = op.rank(x), op.rank(out)
    links, freezes = broadcast(op, x, out)
    if op.target == aten.expand_as.default:  # the size comes from other, and follows its cut
        return Coupling(tuple(links + _like_other(op)), tuple(freezes))
    why = f"expand at {op.where} broadcasts to a size fixed in forward"
    freezes += [Freeze((out, d), why) for d in range(ro - rx)]
    freezes += [Freeze((out, ro - 1 - i), why) for i in range(rx) if op.shape(x)[rx - 1 - i] != op.shape(out)[ro - 1 - i]]
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.repeat.default)
def repeat(op):
    """x.repeat(r0, .., rk): out dim d tiles x's aligned dim r_d times, so channel j of out is
    channel j % n of x (a removed channel goes from every tile, and the tiles keep their order).
    A tiled size-1 dim is a broadcast and a new leading dim a size fixed in forward: positions."""
    x, out = op.t(0), op.out
    rx, ro, reps = op.rank(x), op.rank(out), list(op.arg(1, "repeats"))
    lead = ro - rx
    why = f"repeat at {op.where} tiles to a size fixed in forward"
    links, freezes = [], [Freeze((out, d), why, "position") for d in range(lead)]
    for d in range(rx):
        n, r = op.shape(x)[d], reps[lead + d]
        if r == 1:
            links.append(same(x, d, out, lead + d))
        elif n == 1:
            freezes.append(Freeze((out, lead + d), why, "position"))
        else:
            links.append(Link((out, lead + d), (x, d), np.arange(n * r), np.arange(n * r) % n))
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.repeat_interleave.self_int)
def repeat_interleave(op):
    """x.repeat_interleave(r, dim): out channel j of that dim is x's channel j // r (a channel's
    copies sit side by side and go with it); the other dims pass through. A size-1 dim repeated is
    a broadcast to a size fixed in forward, frozen as expand's is. Without a dim, x is flattened
    first: frozen."""
    x, out = op.t(0), op.out
    r, dim = op.arg(1, "repeats"), op.arg(2, "dim", None)
    if dim is None:
        why = f"repeat_interleave at {op.where} flattens its input"
        return Coupling(freezes=tuple(Freeze((t, d), why) for t in (x, out) for d in range(op.rank(t))))
    d = op.dim(dim, x)
    n = op.shape(x)[d]
    links = _others(x, out, op.rank(x), d)
    if n == 1:
        why = f"repeat_interleave at {op.where} broadcasts to a size fixed in forward"
        return Coupling(tuple(links), (Freeze((out, d), why),))
    links.append(Link((out, d), (x, d), np.arange(n * r), np.arange(n * r) // r))
    return Coupling(tuple(links))


def _others(x, y, rank: int, skip: int) -> list:
    return [same(x, d, y, d) for d in range(rank) if d != skip]


@rule(aten.cat.default, aten.concat.default)
def cat(op):
    xs = [t for t in op.ts(0) if op.shape(t) != (0,)]
    out = op.out
    dim = op.dim(op.arg(1, "dim", 0), out)
    links, start = [], 0
    for t in xs:
        n = op.shape(t)[dim]
        links += _others(t, out, op.rank(out), dim) + [offset(t, dim, out, dim, n, start)]
        start += n
    return Coupling(tuple(links))


def _split(op, sizes: list, dim: int) -> Coupling:
    x, links, start = op.t(0), [], 0
    for o, n in zip(op.outs(), sizes):
        links += _others(o, x, op.rank(x), dim) + [offset(o, dim, x, dim, n, start)]
        start += n
    return Coupling(tuple(links))


@rule(aten.split_with_sizes.default)
def split_with_sizes(op):
    """Sizes are given: a cut that changes them breaks forward, which verification reports, unless
    a module owns them (surgery.owned_sizes). Equal pieces, as split((self.c, self.c)) makes, then
    follow one attribute only if every piece drops the same local channels."""
    x = op.t(0)
    dim = op.dim(op.arg(2, "dim", 0), x)
    sizes = [op.shape(o)[dim] for o in op.outs()]
    c = _split(op, sizes, dim)
    if len(sizes) > 1 and len(set(sizes)) == 1:
        n, outs = sizes[0], op.outs()
        c = c._replace(links=c.links + tuple(Link((outs[0], dim), (o, dim), np.arange(n), np.arange(n)) for o in outs[1:]))
    return c


@rule(aten.split.Tensor, aten.chunk.default, aten.tensor_split.sections)
def split(op):
    """Equal pieces stay equal after a cut only if every piece drops the same local channels."""
    x = op.t(0)
    dim = op.dim(op.arg(2, "dim", 0), x)
    outs = op.outs()
    sizes = [op.shape(o)[dim] for o in outs]
    c = _split(op, sizes, dim)
    if len(set(sizes)) == 1:
        n = sizes[0]
        equal = tuple(Link((outs[0], dim), (o, dim), np.arange(n), np.arange(n)) for o in outs[1:])
        return c._replace(links=c.links + equal)
    why = f"{op.target} at {op.where} cuts unequal pieces, whose sizes forward computes"
    return c._replace(freezes=c.freezes + (Freeze((x, dim), why),))


@rule(aten.unbind.int)
def unbind(op):
    x = op.t(0)
    dim = op.dim(op.arg(1, "dim", 0), x)
    links = []
    for o in op.outs():
        links += [same(x, d, o, d - (d > dim)) for d in range(op.rank(x)) if d != dim]
    why = f"unbind at {op.where} turns each element of this dim into a separate tensor"
    return Coupling(tuple(links), (Freeze((x, dim), why),))


@rule(operator.getitem)
def getitem(op):
    src, k = op.node.args
    t = f"{src.name}#{k}"
    return Coupling(tuple(same(t, d, op.out, d) for d in range(op.rank(op.out))), free=())


@rule(aten.slice.Tensor)
def slice_(op):
    """A slice over the whole dim passes channels through; a partial or strided one has bounds
    fixed in forward, so a cut dim would select other channels: freeze it."""
    x, out = op.t(0), op.out
    dim = op.dim(op.arg(1, "dim", 0), x)
    n, size = op.shape(out)[dim], op.shape(x)[dim]
    start = op.arg(2, "start", 0) or 0
    start = max(0, min(size, start + size if start < 0 else start))
    step = op.arg(4, "step", 1) or 1
    links = _others(x, out, op.rank(x), dim)
    links.append(Link((out, dim), (x, dim), np.arange(n), start + step * np.arange(n)))
    if n == size:
        return Coupling(tuple(links))
    why = f"slice at {op.where} has bounds fixed in forward"
    return Coupling(tuple(links), (Freeze((x, dim), why),))


@rule(aten.select.int)
def select(op):
    x = op.t(0)
    dim = op.dim(op.arg(1), x)
    idx = op.arg(2) % op.shape(x)[dim]
    links = [same(x, d, op.out, d - (d > dim)) for d in range(op.rank(x)) if d != dim]
    why = f"select at {op.where} reads element {idx} of this dim"
    return Coupling(tuple(links), (Freeze((x, dim), why, "stop", np.array([idx])),))


@rule(aten.flip.default)
def flip(op):
    """Reversal commutes with removing elements, so a flipped dim maps index i to n-1-i."""
    x, out = op.t(0), op.out
    dims = [op.dim(d, x) for d in op.arg(1)]
    links = [same(x, d, out, d) for d in range(op.rank(x)) if d not in dims]
    links += [Link((out, d), (x, d), np.arange(op.shape(x)[d]), np.arange(op.shape(x)[d])[::-1].copy()) for d in dims]
    return Coupling(tuple(links))


@rule(aten.roll.default)
def roll(op):
    """A roll wraps around at the dim's size, so cutting a rolled dim moves the wrap: freeze it."""
    x, out = op.t(0), op.out
    dims = [op.dim(d, x) for d in op.arg(2, "dims", [])] or list(range(op.rank(x)))
    why = f"roll at {op.where} wraps around at this dim's size"
    links = [same(x, d, out, d) for d in range(op.rank(x)) if d not in dims]
    return Coupling(tuple(links), tuple(Freeze((t, d), why) for t in (x, out) for d in dims))


@rule(aten.constant_pad_nd.default, aten.pad.default)
def pad(op):
    x, out = op.t(0), op.out
    pads = list(op.arg(1))
    links, freezes = [], []
    padded = {op.rank(x) - 1 - i // 2 for i in range(0, len(pads), 2) if pads[i] or pads[i + 1]}
    for d in range(op.rank(x)):
        if d not in padded:
            links.append(same(x, d, out, d))
            continue
        lo = pads[2 * (op.rank(x) - 1 - d)]
        n = op.shape(x)[d] - max(0, -lo) - max(0, -pads[2 * (op.rank(x) - 1 - d) + 1])
        links.append(Link((x, d), (out, d), max(0, -lo) + np.arange(n), max(0, lo) + np.arange(n)))
        fill = np.setdiff1d(np.arange(op.shape(out)[d]), max(0, lo) + np.arange(n))
        if fill.size:
            freezes.append(Freeze((out, d), f"padding at {op.where} has a size fixed in forward", "stop", fill))
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.channel_shuffle.default, aten.native_channel_shuffle.default)
def channel_shuffle(op):
    """out[k*g + i] = in[i*(C/g) + k]: local channel k of every group goes together, g stays."""
    x, g = op.t(0), op.arg(1)
    c = op.shape(x)[1]
    per = c // g
    src = np.arange(c)
    links = [same(x, d, op.out, d) for d in range(op.rank(x)) if d != 1]
    links.append(Link((x, 1), (op.out, 1), src, (src % per) * g + src // per))
    links.append(Link((x, 1), (x, 1), src, src % per))
    return Coupling(tuple(links))


@rule(aten.pixel_shuffle.default, aten.pixel_unshuffle.default)
def pixel_shuffle(op):
    """pixel_shuffle: output channel c is input channels [c*r^2, (c+1)*r^2); unshuffle the reverse."""
    x, out, r = op.t(0), op.out, op.arg(1)
    shuffle = op.target == aten.pixel_shuffle.default
    small, big = (out, x) if shuffle else (x, out)
    links = [same(x, 0, out, 0), block(small, 1, big, 1, op.shape(small)[1], r * r)]
    freezes = positions(x, range(2, op.rank(x)), "spatial") + positions(out, range(2, op.rank(out)), "spatial")
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.index.Tensor, aten.gather.default, aten.index_select.default, aten.take_along_dim.default)
def index(op):
    """x[..., idx, ...]: the indexed dims are read by value and stay whole; the dims that are not
    indexed pass through (a relative-position-bias table (positions, heads)[idx] keeps its heads).
    Other gathers freeze everything they touch."""
    tensors = op.tensor_inputs() + [op.out]
    why = f"{op.target} at {op.where} gathers by index values, which the trace cannot follow"
    frozen = Coupling(freezes=tuple(Freeze((t, d), why) for t in tensors for d in range(op.rank(t))))
    if op.target != aten.index.Tensor:
        return frozen
    x, out, idx = op.t(0), op.out, list(op.arg(1))
    at = [i for i, t in enumerate(idx) if t is not None]
    if not at or at != list(range(at[0], at[-1] + 1)) or any(op.tensor_id(idx[i]) is None for i in at):
        return frozen  # indices apart from each other move the result's dims: not followed
    j, k = at[0], len(at)
    nb = op.rank(out) - (op.rank(x) - k)  # dims of the broadcast index shape
    links = [same(x, d, out, d) for d in range(j)]
    links += [same(x, d, out, d - k + nb) for d in range(j + k, op.rank(x))]
    freezes = [Freeze((x, d), why) for d in range(j, j + k)]
    for i in at:
        t = op.tensor_id(idx[i])
        for m in range(op.rank(t)):
            dout = j + nb - op.rank(t) + m
            if op.shape(t)[m] == op.shape(out)[dout]:
                links.append(same(t, m, out, dout))
            else:
                freezes.append(Freeze((t, m), "a broadcast dim", "position"))
    return Coupling(tuple(links), tuple(freezes))
