"""Attention: heads are channels. A head is the block of head_dim channels that q, k, v and
the output projection share; the head size itself is never cut (the softmax scale and rotary
embeddings depend on it), so a head goes or stays whole.

The reshape that splits a projection into (heads, head_dim) is where a head becomes a channel.
A split alone cannot say which factor carries channels (a channel shuffle's view(b, g, c/g)
carries the inner one); `splits_heads` looks at where the split goes, asking each op's
registered rule where the dim goes: a split that reaches the q, k or v of an attention op, or
an operand of a matmul, splits heads.
"""
from __future__ import annotations

import numpy as np
import torch

from . import DECLARED, Coupling, Freeze, Link, OpCall, load_all, rule, same

aten = torch.ops.aten

_DEPTH = 32  # ops followed from a split before giving up


def _slots(node) -> dict:
    """{tensor id: shape} of a node's output: its name, or name#k for each item of a tuple."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return {node.name: tuple(val.shape)}
    if isinstance(val, (list, tuple)) and val and all(isinstance(v, torch.Tensor) for v in val):
        return {f"{node.name}#{k}": tuple(v.shape) for k, v in enumerate(val)}
    return {}


def _coupling(user, rules: dict):
    """The registered rule's Coupling of one call, from the shapes recorded on the nodes; None
    where the op has no rule or its rule cannot read the call (the trail ends there)."""
    fn = rules.get(user.target)
    if fn is None or user.op != "call_function":
        return None
    shapes = {}
    for n in (user, *user.all_input_nodes):
        shapes.update(_slots(n))
    tid = lambda a: a.name if isinstance(a, torch.fx.Node) and a.name in shapes else None  # noqa: E731
    try:
        return fn(OpCall(user, shapes.__getitem__, tid, f"node {user.name}"))
    except Exception:  # noqa: BLE001  (a rule that cannot read a call also stops grouping there)
        return None


def _whole(idx) -> bool:
    """A link's index map keeps every element apart (1:1, an offset, a reversal): the dim goes on
    as it is. A block (flatten) or a split into factors does not."""
    return idx is None or len(np.unique(idx)) == len(idx)


def _carried(coupling, slot, outputs: set) -> list:
    """The output slots that the rule links one-to-one with `slot`. A dim that the rule links in
    place but freezes whole (a softmax or a norm over it) is read all together: it ends there."""
    mixed = {f.slot for f in coupling.freezes if f.idx is None and f.kind != "position"}
    found = []
    for l in coupling.links:
        for a, ia, b, ib in ((l.a, l.ia, l.b, l.ib), (l.b, l.ib, l.a, l.ia)):
            if a != slot or b[0] not in outputs or not (_whole(ia) and _whole(ib)):
                continue
            if ia is None and ib is None and (a in mixed or b in mixed):
                continue
            found.append(b)
    return found


# ---- the attention products: which operand dims they read as a head's channels -------------------

def _sdpa_reads(user, node, dim: int, rank: int) -> bool:  # q, k or v's last dim
    return any(a is node for a in user.args[:3]) and dim == rank - 1


def _matmul_reads(user, node, dim: int, rank: int) -> bool:  # the contracted dim, or v's features
    return (user.args[0] is node and dim == rank - 1) or (user.args[1] is node and dim >= rank - 2)


def _einsum_reads(user, node, dim: int, rank: int) -> bool:
    """The letter of this dim is contracted, or is v's feature (the output's last letter)."""
    ins, _, res = user.args[0].replace(" ", "").partition("->")
    subs = [sub for t, sub in zip(user.args[1], ins.split(",")) if t is node]
    return any(len(sub) == rank and (sub[dim] not in res or sub[dim] == res[-1]) for sub in subs)


HEAD_READERS = {aten.scaled_dot_product_attention.default: _sdpa_reads, aten.matmul.default: _matmul_reads,
                aten.bmm.default: _matmul_reads, aten.einsum.default: _einsum_reads}


def splits_heads(node, dim: int) -> bool:
    """Is `dim` of this reshape's output read by an attention product (HEAD_READERS) as a head's
    channels? The dim is followed through the ops whose registered rules carry it whole; then
    the dim before it is the heads."""
    rules = {**load_all(), **DECLARED}
    frontier, seen = [(node.name, dim)], set()
    nodes = {node.name: node}
    for _ in range(_DEPTH):
        nxt = []
        for tid, d in frontier:
            src = nodes[tid.split("#")[0]]
            rank = len(_slots(src)[tid]) if tid == src.name else None
            for u in src.users:
                reads = HEAD_READERS.get(u.target)
                if rank is not None and reads is not None and reads(u, src, d, rank):
                    return True
                c = _coupling(u, rules)
                outputs = _slots(u)
                for slot in (_carried(c, (tid, d), set(outputs)) if c is not None else ()):
                    if slot not in seen:
                        seen.add(slot)
                        nodes[u.name] = u
                        nxt.append(slot)
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
