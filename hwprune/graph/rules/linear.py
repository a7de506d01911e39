"""Linear maps and contractions: linear, matmul/bmm/mm/addmm, embedding (attention: attention.py)."""
from __future__ import annotations

import torch

from . import Coupling, Freeze, Link, positions, rule, same

aten = torch.ops.aten


def _leading(a, b, ra: int, rb: int, k: int) -> list:
    """The batch dims (all but the last k) of a and b, aligned from the right, where sizes agree."""
    return [same(a, ra - 1 - i, b, rb - 1 - i) for i in range(k, min(ra, rb))]


@rule(aten.linear.default)
def linear(op):
    x, w, b, out = op.t(0), op.t(1), op.t(2, "bias"), op.out
    links = _leading(x, out, op.rank(x), op.rank(out), 1) + [same(x, -1 % op.rank(x), w, 1),
                                                                 same(w, 0, out, op.rank(out) - 1)]
    if b is not None:
        links.append(same(w, 0, b, 0))
    return Coupling(tuple(links))


def _matmul(op, a, b, out, bias=None) -> Coupling:
    ra, rb, ro = op.rank(a), op.rank(b), op.rank(out)
    links = [same(a, ra - 1, b, rb - 2), same(a, ra - 2, out, ro - 2), same(b, rb - 1, out, ro - 1)]
    freezes = []
    for t, r in ((a, ra), (b, rb)):
        for i in range(2, r):  # batch dims broadcast from the right
            d, do = r - 1 - i, ro - 1 - i
            if op.shape(t)[d] == op.shape(out)[do]:
                links.append(same(t, d, out, do))
            else:
                freezes.append(Freeze((t, d), "a broadcast batch dim", "position"))
    if bias is not None:
        rbias = op.rank(bias)
        links += [same(bias, rbias - 1 - i, out, ro - 1 - i) for i in range(rbias)
                  if op.shape(bias)[rbias - 1 - i] == op.shape(out)[ro - 1 - i]]
        freezes += [Freeze((bias, rbias - 1 - i), "a broadcast dim", "position") for i in range(rbias)
                    if op.shape(bias)[rbias - 1 - i] != op.shape(out)[ro - 1 - i]]
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.matmul.default, aten.bmm.default, aten.mm.default)
def matmul(op):
    if op.rank(op.t(0)) < 2 or op.rank(op.t(1)) < 2:
        return Coupling(freezes=tuple(Freeze((t, d), "matmul with a vector", "stop")
                                      for t in (op.t(0), op.t(1), op.out) for d in range(op.rank(t))))
    return _matmul(op, op.t(0), op.t(1), op.out)


@rule(aten.addmm.default, aten.baddbmm.default)
def addmm(op):
    return _matmul(op, op.t(1), op.t(2), op.out, bias=op.t(0))


@rule(aten.embedding.default)
def embedding(op):
    w, ids, out = op.t(0), op.t(1), op.out
    links = [same(ids, d, out, d) for d in range(op.rank(ids))] + [same(w, 1, out, op.rank(out) - 1)]
    return Coupling(tuple(links), tuple(positions(w, [0], "embedding rows are looked up by id")))


@rule(aten.einsum.default)
def einsum(op):
    """Each subscript letter is one index: the dims that carry it, in every operand and the
    output, are the same channels (a size-1 operand dim broadcasts and couples nothing); a
    contracted letter joins the operands only, as matmul's inner dim does."""
    eq, xs, out = op.arg(0).replace(" ", ""), op.ts(1), op.out
    ins, _, res = eq.partition("->")
    if "." in eq or not res:
        why = f"einsum at {op.where}: an equation with '...' or without '->' is not followed"
        return Coupling(freezes=tuple(Freeze((t, d), why) for t in [*xs, out] for d in range(op.rank(t))))
    slots: dict = {}
    for t, sub in [*zip(xs, ins.split(",")), (out, res)]:
        for d, letter in enumerate(sub):
            slots.setdefault(letter, []).append((t, d))
    links, freezes = [], []
    for letter, where in slots.items():
        size = max(op.shape(t)[d] for t, d in where)
        big = [(t, d) for t, d in where if op.shape(t)[d] == size]
        links += [Link(big[0], s) for s in big[1:]]
        freezes += [Freeze(s, "a broadcast dim", "position") for s in where if op.shape(s[0])[s[1]] != size]
    return Coupling(tuple(links), tuple(freezes))
