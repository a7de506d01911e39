"""Where heads are: the reshapes that split a projection into (heads, head_dim), by module.

Surgery needs each attention module's head counts before and after a cut, to fix the
attributes it owns (num_heads, all_head_size, ...); the counts are read off the traced splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .rules import load_all
from .rules.attention import splits_heads
from .rules.shape import chunks, reshape


@dataclass(frozen=True)
class HeadCut:
    """Head counts of one module: query heads (the largest split), kv heads (the smallest; equal
    to heads without grouped-query attention), each (before, after), and the head size."""
    heads: tuple
    kv_heads: tuple
    head_dim: int


def _is_reshape(node) -> bool:
    """A view, reshape or flatten: an op whose registered rule is the reshape rule."""
    return node.op == "call_function" and load_all().get(node.target) is reshape


def _head_dim_of(sx: tuple, so: tuple) -> tuple | None:
    """(heads dim, head_dim, head_dim's dim) of a split (.., H*d) -> (.., H, d), or None."""
    for ins, outs in chunks(sx, so):
        big_in = [d for d in ins if sx[d] > 1]
        big_out = [d for d in outs if so[d] > 1]
        if len(big_in) == 1 and len(big_out) >= 2:
            return big_out[-2], so[big_out[-1]], big_out[-1]
    return None


def _head_splits(graph):
    """(node, heads dim, head_dim) for every traced split of a projection into heads."""
    for node in graph.traced.graph.nodes:
        if not _is_reshape(node) or not node.args:
            continue
        x = getattr(node.args[0], "name", None)
        if x not in graph.shapes or node.name not in graph.shapes:
            continue
        split = _head_dim_of(graph.shapes[x], graph.shapes[node.name])
        if split is not None and splits_heads(node, split[2]):
            yield node, split[0], split[1]


def head_modules(traced) -> set:
    """Paths of the modules in whose forward a head split is traced (from the graph's own shapes)."""
    out = set()
    for node in traced.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not _is_reshape(node) or not isinstance(node.args[0], torch.fx.Node):
            continue
        sx, so = node.args[0].meta.get("val"), node.meta.get("val")
        if not isinstance(sx, torch.Tensor) or not isinstance(so, torch.Tensor):
            continue
        split = _head_dim_of(tuple(sx.shape), tuple(so.shape))
        if split is not None and splits_heads(node, split[2]):
            out.add(list(stack.values())[-1][0] if stack else "")
    return out


def head_labels(graph) -> np.ndarray:
    """A mask over channel components: True for those that are heads."""
    mark = np.zeros(int(graph.labels.max()) + 1 if graph.labels.size else 0, dtype=bool)
    for node, hd, _ in _head_splits(graph):
        base = graph.base[(node.name, hd)]
        mark[graph.labels[base: base + graph.shapes[node.name][hd]]] = True
    return mark


def head_changes(graph, removed: np.ndarray) -> dict:
    """{module path: HeadCut} for every module in whose forward a head split was traced."""
    found: dict = {}
    for node, hd, d in _head_splits(graph):
        stack = node.meta.get("nn_module_stack")
        path = list(stack.values())[-1][0] if stack else ""
        found.setdefault(path, []).append((graph.shapes[node.name][hd], graph.new_shape(node.name, removed)[hd], d))
    out = {}
    for path, splits in found.items():
        q = max(splits, key=lambda s: s[0])
        kv = min(splits, key=lambda s: s[0])
        out[path] = HeadCut((q[0], q[1]), (kv[0], kv[1]), q[2])
    return out



