"""Surgery on a graph rather than on modules: a model loaded from a .pt2 is its ATen graph,
so the sizes a cut changes are arguments of graph nodes. One fixer per op rewrites them from
the tensors' new shapes; ops that infer sizes from their inputs need none."""
from __future__ import annotations

import torch

from ..registry import Registry

aten = torch.ops.aten
ARG_FIXERS = Registry("graph fixer")
fixer = ARG_FIXERS.register


def _set(node, i: int, value) -> None:
    args = list(node.args)
    args[i] = value
    node.args = tuple(args)


@fixer(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default)
def out_shape(node, old, new) -> None:
    _set(node, 1, list(new(node.name)))


@fixer(aten.unflatten.int)
def unflatten(node, old, new) -> None:
    d = node.args[1] % len(old(node.args[0].name))
    _set(node, 2, list(new(node.name)[d: d + len(node.args[2])]))


@fixer(aten.split_with_sizes.default, aten.split.Tensor, aten.chunk.default)
def split(node, old, new) -> None:
    x = node.args[0]
    dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(old(x.name))
    sizes = [new(f"{node.name}#{k}")[dim] for k in range(len(node.meta["val"]))]
    node.target, node.args, node.kwargs = aten.split_with_sizes.default, (x, sizes, dim), {}


@fixer(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
       aten.conv2d.padding, aten.conv3d.padding)
def conv_groups(node, old, new) -> None:
    if len(node.args) > 6 and node.args[6] != 1:
        _set(node, 6, new(node.args[0].name)[1] // new(node.args[1].name)[1])


@fixer(aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input)
def conv_transpose_groups(node, old, new) -> None:
    g = node.args[6] if len(node.args) > 6 else 1
    if g != 1 and old(node.args[0].name)[1] == g:  # depthwise: whole groups went
        _set(node, 6, new(node.args[0].name)[1])


@fixer(aten.group_norm.default)
def group_norm(node, old, new) -> None:
    per = old(node.args[0].name)[1] // node.args[1]
    _set(node, 1, new(node.args[0].name)[1] // per)


@fixer(aten.layer_norm.default, aten.rms_norm.default)
def layer_norm(node, old, new) -> None:
    _set(node, 1, list(new(node.args[0].name)[-len(node.args[1]):]))


def fix_graph_args(gm: torch.fx.GraphModule, old, new) -> None:
    """Rewrite every size argument in gm's graph for the cut; old/new give tensor shapes."""
    for node in gm.graph.nodes:
        fn = ARG_FIXERS.get(node.target) if node.op == "call_function" else None
        if fn is not None:
            fn(node, old, new)
    gm.recompile()
