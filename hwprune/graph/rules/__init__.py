"""Per-op channel rules, one small function per aten op (or op family), found by key.

A rule looks at one call and returns a frozen `Coupling`: which element of which dim of
which tensor goes with which element of another (`Link`), which dims are positions rather
than channels (spatial, batch, kernel taps: never pruned), and which must be frozen and
why. Every dim of every tensor the call touches must be covered; whatever a rule leaves
out is frozen with a reason naming the op, so a forgotten dim can never be silently cut.
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

import numpy as np
import torch

from ...registry import Registry

Slot = tuple  # (tensor id, dim): one dim of one tensor of the graph


class Link(NamedTuple):
    """Element ia[k] of slot a is the same channel as element ib[k] of slot b (None: all, 1:1)."""
    a: Slot
    b: Slot
    ia: np.ndarray | None = None
    ib: np.ndarray | None = None


class Freeze(NamedTuple):
    """Elements idx (None: all) of a slot may not be cut, for `reason`.

    kind "position": the dim is not a channel at all (spatial, batch, kernel tap); such
    components are not groups. Any other kind is a frozen group, reported with its reason.
    """
    slot: Slot
    reason: str
    kind: str = "stop"
    idx: np.ndarray | None = None


class Coupling(NamedTuple):
    links: tuple = ()
    freezes: tuple = ()
    free: tuple = ()  # slots a rule leaves uncoupled on purpose (e.g. the summed dim of sum)


class OpCall:
    """What a rule sees of one call_function node: tensor args, shapes, options by schema name."""

    def __init__(self, node, shape_of: Callable, tensor_id: Callable, where: str):
        self.node, self.target, self.where = node, node.target, where
        self._shape_of, self._tid = shape_of, tensor_id
        schema = getattr(node.target, "_schema", None)
        self._pos = {a.name: i for i, a in enumerate(schema.arguments)} if schema else {}

    def arg(self, i: int | None, name: str | None = None, default=None):
        """Argument by position i, or by its schema name wherever the call put it (i None: by name only)."""
        i = self._pos.get(name, i)
        if i is not None and i < len(self.node.args):
            return self.node.args[i]
        return self.node.kwargs.get(name, default) if name else default

    def t(self, i: int, name: str | None = None):
        """Tensor id of tensor argument i (None when absent or not a tensor)."""
        a = self.arg(i, name)
        return self._tid(a) if a is not None else None

    def tensor_id(self, a):
        """Tensor id of an argument value (a graph node; None when it is not a tensor)."""
        return self._tid(a)

    def ts(self, i: int, name: str | None = None) -> list:
        return [self._tid(a) for a in (self.arg(i, name) or [])]

    def tensor_inputs(self) -> list:
        """Every tensor among the args and kwargs, lists flattened, in order."""
        found = []
        torch.fx.node.map_arg((self.node.args, self.node.kwargs), found.append)
        return [t for t in (self._tid(n) for n in found) if t is not None]

    @property
    def out(self):
        return self._tid(self.node)

    def outs(self) -> list:
        return [f"{self.node.name}#{k}" for k in range(len(self.node.meta["val"]))]

    def shape(self, tid) -> tuple:
        return self._shape_of(tid)

    def rank(self, tid) -> int:
        return len(self._shape_of(tid))

    def dim(self, d: int, tid) -> int:
        return d % self.rank(tid) if self.rank(tid) else 0


Rule = Callable[[OpCall], Coupling]
RULES = Registry("rule")
rule = RULES.register  # @rule(aten.x.default, ...): one rule per op overload


def broadcast(op, t, out) -> tuple:
    """Dims of t aligned with out from the right: equal sizes go 1:1, a size-1 dim couples nothing."""
    rt, ro = op.rank(t), op.rank(out)
    links, freezes = [], []
    for i in range(rt):
        d, do = rt - 1 - i, ro - 1 - i
        if op.shape(t)[d] == op.shape(out)[do]:
            links.append(same(t, d, out, do))
        else:
            freezes.append(Freeze((t, d), "a broadcast dim", "position"))
    return links, freezes


# ---- small builders every rule uses ---------------------------------------------------------

def same(a, da: int, b, db: int) -> Link:
    return Link((a, da), (b, db))


def identity_all(a, b, rank: int) -> list:
    """Every dim of a goes 1:1 with the same dim of b (activations, dropout, ...)."""
    return [same(a, d, b, d) for d in range(rank)]


def positions(tid, dims, why: str) -> list:
    return [Freeze((tid, d), why, "position") for d in dims]


def block(a, da: int, b, db: int, n_a: int, k: int) -> Link:
    """Element i of a is the block [i*k, (i+1)*k) of b (flatten, pixel shuffle)."""
    ia = np.repeat(np.arange(n_a), k)
    return Link((a, da), (b, db), ia, np.arange(n_a * k))


def offset(a, da: int, b, db: int, n: int, start: int) -> Link:
    """Element i of a is element start + i of b (cat, split, slice)."""
    return Link((a, da), (b, db), np.arange(n), np.arange(start, start + n))


DECLARED: dict = {}  # user declarations: op or autograd Function name -> rule


def declare_rule(target, like: str = "elementwise") -> None:
    """Give your own op, or a custom autograd Function, the rule of a built-in family.

    target: an op (torch.ops.ns.op or one overload), "ns::op", or an autograd Function
    class or its qualified name. like: a built-in rule's name ("elementwise" for activations
    such as a memory-efficient Swish, "spatial", "batch_norm", ...). A Function declared this
    way is traced through: the ops of its forward get their own rules."""
    rules = {fn.__name__: fn for fn in load_all().values()}
    if like not in rules:
        raise ValueError(f"--rule: no built-in rule named {like!r}; choose one of {', '.join(sorted(rules))}")
    if isinstance(target, type) and issubclass(target, torch.autograd.Function):
        target = target.__qualname__
    if isinstance(target, str) and "::" in target:
        ns, name = target.split("::", 1)
        target = getattr(getattr(torch.ops, ns), name)
    overloads = [getattr(target, o) for o in target.overloads()] if hasattr(target, "overloads") else [target]
    for t in overloads:
        DECLARED[t] = rules[like]


_FAMILIES = ("conv", "linear", "attention", "norm", "pointwise", "shape", "pool", "reduce")


def load_all() -> dict:
    for fam in _FAMILIES:
        importlib.import_module(f"{__name__}.{fam}")
    return RULES
