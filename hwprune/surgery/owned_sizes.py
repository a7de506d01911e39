"""Sizes that a module without a cutter keeps as its own int attributes and writes into forward.

CSPNet's `x.split(self.expand_chs // 2, dim=1)` and YOLO11's C2PSA `split((self.c, self.c), 1)`
read a width from the module, so a cut of that width breaks forward unless the attribute follows
it. For a module without a cutter (and without attention heads, which surgery.attention fixes),
an int attribute whose value is the old size of a cut dim of a tensor that the module's own
forward reads or makes (not its children's) is set to that dim's new size, where every such dim
of that old size went to one new size. A value that matches by coincidence and is used for
something else leaves forward broken or its output changed, and verification then freezes the
group as before; so this is done only where verification is mask equivalence.
"""
from __future__ import annotations

from torch import nn


def owned_sizes(graph, removed) -> dict:
    """{module path: {old size: {new sizes}}} over the cut dims of the tensors that each module's
    own forward (the innermost module of a node) reads or makes."""
    out: dict = {}
    for node in graph.traced.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        path = list(stack.values())[-1][0]
        for t in [a.name for a in node.all_input_nodes] + [node.name] + [f"{node.name}#{k}" for k in range(8)]:
            if t not in graph.shapes:
                continue
            for old, new in zip(graph.shapes[t], graph.new_shape(t, removed)):
                if old != new:
                    out.setdefault(path, {}).setdefault(old, set()).add(new)
    return out


# widths a module keeps are channel counts; small ints are far more often strides, kernel sizes,
# groups or depths, which a coincidence with a narrow cut dim must not touch
MIN_OWNED = 8


def follow_owned_sizes(module: nn.Module, sizes: dict) -> list:
    """Set each int attribute that holds an old size with one new size; returns [(name, old, new)]."""
    changed = []
    for name, value in list(vars(module).items()):
        if (name.startswith("_") or type(value) is not int or value < MIN_OWNED
                or len(sizes.get(value, ())) != 1):
            continue
        new = next(iter(sizes[value]))
        setattr(module, name, new)
        changed.append((name, value, new))
    return changed
