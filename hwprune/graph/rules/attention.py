"""Attention: heads are channels. A head is the block of head_dim channels that q, k, v and
the output projection share; the head size itself is never cut (the softmax scale and rotary
embeddings depend on it), so a head goes or stays whole.

The reshape that splits a projection into (heads, head_dim) is where a head becomes a channel.
A split alone cannot say which factor carries channels (a channel shuffle's view(b, g, c/g)
carries the inner one); `splits_heads` looks at where the split goes: a split that reaches
the q, k or v of an attention op, or an operand of a matmul, splits heads.
"""
from __future__ import annotations

import operator

import numpy as np
import torch

from . import Coupling, Freeze, Link, rule, same

aten = torch.ops.aten

_ELEMENTWISE = {"mul", "div", "add", "sub", "neg", "clone", "contiguous", "_to_copy", "to", "type_as", "dropout",
                "alias", "detach", "expand", "slice", "cat", "split", "chunk", "split_with_sizes", "getitem"}
_VIEWS = {"view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "unflatten"}
_DEPTH = 32


def _op_name(node) -> str:
    if node.target is operator.getitem:
        return "getitem"
    return getattr(getattr(node.target, "_overloadpacket", None), "__name__", "") or ""


def _shape(node) -> tuple | None:
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _carried(node, user, dim: int, rank: int):
    """Where dim of node (of this rank) is in user's output, or None where user ends the trail:
    it mixes that dim (a softmax, a reduction), splits or merges it, or selects from it."""
    name, out = _op_name(user), _shape(user)
    if name in ("unbind", "split", "chunk", "split_with_sizes") and user.args[0] is node:
        d = user.args[1] if len(user.args) > 1 and name == "unbind" else (user.args[2] if len(user.args) > 2 else 0)
        return None if name == "unbind" and d % rank == dim else dim - (name == "unbind" and d % rank < dim)
    if out is None:
        return None
    if name in _ELEMENTWISE:
        return dim + len(out) - rank
    if name == "permute":
        return [d % rank for d in user.args[1]].index(dim)
    if name == "transpose":
        a, b = user.args[1] % rank, user.args[2] % rank
        return b if dim == a else a if dim == b else dim
    if name == "select":
        d = user.args[1] % rank
        return None if d == dim else dim - (d < dim)
    if name in _VIEWS:
        from .shape import _chunks
        shp = _shape(node)
        for ins, outs in _chunks(shp, out):
            if dim in ins:
                big_in = [d for d in ins if shp[d] > 1]
                big_out = [d for d in outs if out[d] > 1]
                return big_out[0] if big_in == [dim] and len(big_out) == 1 else None
    return None


def _reads_as_head_dim(user, node, dim: int, rank: int) -> bool:
    """Does this attention op read dim of node as a head's channels (q/k/v's last dim, a matmul's
    contracted dim or v's features)?"""
    name = _op_name(user)
    if name == "scaled_dot_product_attention":
        return any(a is node for a in user.args[:3]) and dim == rank - 1
    if name in ("matmul", "bmm"):
        return (user.args[0] is node and dim == rank - 1) or (user.args[1] is node and dim >= rank - 2)
    if name == "einsum":  # the letter of this dim is contracted, or is v's feature in the output
        ins, _, res = user.args[0].replace(" ", "").partition("->")
        subs = [sub for t, sub in zip(user.args[1], ins.split(",")) if t is node]
        return any(len(sub) == rank and (sub[dim] not in res or sub[dim] == res[-1]) for sub in subs)
    return False


def splits_heads(node, dim: int) -> bool:
    """Is `dim` of this reshape's output read by an attention op as a head's channels, through ops
    that keep it whole? Then the dim before it is the heads."""
    frontier, seen = [(node, dim)], set()
    for _ in range(_DEPTH):
        nxt = []
        for n, d in frontier:
            shp = _shape(n)
            for u in n.users:
                if shp is not None and _reads_as_head_dim(u, n, d, len(shp)):
                    return True
                nd = _carried(n, u, d, len(shp)) if shp is not None else (d if _op_name(u) == "getitem" else None)
                if nd is not None and (u, nd) not in seen:
                    seen.add((u, nd))
                    nxt.append((u, nd))
        if not nxt:
            return False
        frontier = nxt
    return False


def head_split_link(x, dx: int, out, dims: list, so: tuple, n: int) -> tuple:
    """Channel c of x is head (c // head_dim) % heads of out (dims: the out dims the split makes,
    heads second to last); the other factors (head_dim, a packed qkv's 3) are positions."""
    hd, inner = dims[-2], so[dims[-1]]
    link = Link((x, dx), (out, hd), np.arange(n), (np.arange(n) // inner) % so[hd])
    why = "inside a head: heads are cut whole"
    return link, tuple(Freeze((out, d), why, "position") for d in dims if d != hd)


@rule(aten.scaled_dot_product_attention.default)
def sdpa(op):
    """q (.., Hq, L, E), k (.., Hkv, S, E), v (.., Hkv, S, Ev) -> (.., Hq, L, Ev). Heads pair up
    1:1, or with grouped-query attention (enable_gqa) query head i reads kv head i // (Hq/Hkv)."""
    q, k, v, out = op.t(0), op.t(1), op.t(2), op.out
    mask = op.t(3, "attn_mask")
    r = op.rank(q)
    links = [same(q, d, out, d) for d in range(r - 1)] + [same(k, d, v, d) for d in range(r - 1)]
    links += [same(q, d, k, d) for d in range(r - 3)] + [same(v, r - 1, out, r - 1), same(q, r - 1, k, r - 1)]
    hq, hkv = op.shape(q)[r - 3], op.shape(k)[r - 3]
    if hq == hkv:
        links.append(same(q, r - 3, k, r - 3))
    else:  # grouped-query: a kv head and the query heads that share it are one channel
        links.append(Link((q, r - 3), (k, r - 3), np.arange(hq), np.arange(hq) // (hq // hkv)))
    freezes = [Freeze((q, r - 1), "the softmax scale 1/sqrt(head_dim) depends on the q/k head size")]
    if mask is not None:
        ml, mf = _mask(op, mask, q, k)
        links, freezes = links + ml, freezes + mf
    return Coupling(tuple(links), tuple(freezes))


def _mask(op, mask, q, k) -> tuple:
    """The mask (or additive bias) broadcasts against the scores (.., Hq, L, S): a per-head bias
    (T5's relative positions) goes with its head; a size-1 dim couples nothing."""
    r, rm = op.rank(q), op.rank(mask)
    scores = [(q, d) for d in range(r - 2)] + [(q, r - 2), (k, r - 2)]
    links, freezes = [], []
    for i in range(rm):
        d, (t, dt) = rm - 1 - i, scores[len(scores) - 1 - i]
        if op.shape(mask)[d] == op.shape(t)[dt]:
            links.append(same(mask, d, t, dt))
        elif op.shape(mask)[d] == 1:
            freezes.append(Freeze((mask, d), "a broadcast dim", "position"))
        else:
            freezes.append(Freeze((mask, d), f"attention mask at {op.where} does not fit the scores"))
    return links, freezes
