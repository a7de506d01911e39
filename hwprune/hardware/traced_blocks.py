"""A model's conv and linear kernels from its traced graph, as onnx_blocks gives them, with no
ONNX export: past 2 GB of weights protobuf cannot hold the export, and the size budgets
(MACs, parameters) need only the kernels' shapes, which the trace has (each node's "val").

Each conv and linear node of the graph becomes a one-node Block (hwprune.hardware.blocks) in
graph order, the node the exporter would make of it, so that `channels`, the size counts and
the cost model read it as they read an exported kernel:
- a conv is a Conv with its weight and `group`; it has a bias input where the module has one,
  or where the exporter folds the BatchNorm after it into it (eval mode: the conv's only user
  is a BatchNorm whose scale, shift and statistics are all parameters or buffers);
- a linear with a bias, of a 2-D input, is a Gemm (transB=1) with it; any other a MatMul of
  the transposed weight, whose bias, if any, the exporter adds in a node of its own (so the
  parameter count leaves it out, as it did of the export: kept, so that plans stay the same);
- a matmul by a 2-D parameter is a MatMul of that weight.
The weights carry no values (a zero-stride view of their shape), and the node is named by the
scope of the module it runs in, as the exporter names it ("/layer1.0.conv1/conv2d_3").
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import helper

from ..graph.rules.conv import CONVS
from .blocks import Block, Tensor

aten = torch.ops.aten
_OPSET = (("", 17),)
_DTYPES = {torch.float32: onnx.TensorProto.FLOAT, torch.float16: onnx.TensorProto.FLOAT16,
           torch.bfloat16: onnx.TensorProto.BFLOAT16, torch.float64: onnx.TensorProto.DOUBLE}
_BATCH_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}

# aten op -> fn(node, TracedGraph) -> (ONNX op type, [input Tensor], attributes), or None where the
# node is no kernel the exporter would give a channel sweep (its weight is not a parameter)
KERNELS: dict[object, Callable] = {}


def kernel(*ops):
    """Register how nodes of these aten ops become a kernel; a second registration is refused."""
    def register(fn):
        for op in ops:
            if op in KERNELS:
                raise ValueError(f"two kernels registered for {op}")
            KERNELS[op] = fn
        return fn
    return register


def traced_blocks(traced) -> list[Block]:
    """The conv and linear kernels of a TracedGraph (hwprune.graph.trace), in graph order."""
    blocks = []
    for node in traced.graph.nodes:
        made = KERNELS[node.target](node, traced) if node.op == "call_function" and node.target in KERNELS else None
        if made is not None:
            op, inputs, attributes = made
            blocks.append(_block(node, traced, op, inputs, attributes))
    return blocks


def _block(node, traced, op: str, inputs: list, attributes: dict) -> Block:
    out = _tensor(node.name, node)
    onnx_node = helper.make_node(op, [t.name for t in inputs], [out.name],
                                 name=f"/{_scope(node, traced)}/{node.name}", **attributes)
    return Block((onnx_node,), tuple(inputs), (out,), _OPSET)


def _scope(node, traced) -> str:
    """The innermost module the node runs in; without a module stack (the symbolic_trace
    fallback), the module that owns its weight."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0]
    kind = traced.placeholders.get(getattr(node.args[1], "name", None))
    return kind[1].rpartition(".")[0] if kind and kind[0] in ("param", "buffer") else ""


def _tensor(name: str, node, shape: tuple | None = None, constant: bool = False) -> Tensor:
    val = node.meta["val"]
    shape = tuple(int(s) for s in val.shape) if shape is None else shape
    # a weight's values never change its kernel: a zero-stride view stands for them, of no memory
    value = np.broadcast_to(np.zeros((), np.float32), shape) if constant else None
    return Tensor(name, shape, _DTYPES.get(val.dtype, onnx.TensorProto.FLOAT), value)


def _parameter(traced, arg) -> bool:
    return isinstance(arg, torch.fx.Node) and traced.placeholders.get(arg.name, ("",))[0] in ("param", "buffer")


def _input(arg) -> Tensor:
    return _tensor(arg.name, arg)


def _weight(arg, shape: tuple | None = None) -> Tensor:
    return _tensor(arg.name, arg, shape, constant=True)


def _folds_batch_norm(node, traced) -> bool:
    """The exporter folds a BatchNorm into the conv before it where the conv's output goes to
    the BatchNorm alone and the BatchNorm's four tensors are parameters or buffers."""
    users = list(node.users)
    return (len(users) == 1 and users[0].target in _BATCH_NORMS and users[0].args[0] is node
            and all(_parameter(traced, a) for a in users[0].args[1:5]))


def _conv(node, traced, bias, groups: int):
    x, w = node.args[0], node.args[1]
    if not _parameter(traced, w):
        return None
    inputs = [_input(x), _weight(w)]
    if bias is not None:
        inputs.append(_weight(bias))
    elif _folds_batch_norm(node, traced):
        inputs.append(_tensor(f"{node.name}.folded_bias", w, (int(w.meta["val"].shape[0]),), constant=True))
    return "Conv", inputs, {"group": int(groups)}


def _arg(node, i: int, name: str, default):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


@kernel(*CONVS)
def _conv_op(node, traced):
    return _conv(node, traced, _arg(node, 2, "bias", None), _arg(node, 6, "groups", 1))


@kernel(aten.linear.default)
def _linear(node, traced):
    x, w, bias = node.args[0], node.args[1], _arg(node, 2, "bias", None)
    if not _parameter(traced, w):
        return None
    if x.meta["val"].dim() == 2 and bias is not None:
        return "Gemm", [_input(x), _weight(w), _weight(bias)], {"transB": 1}
    out_features, in_features = (int(s) for s in w.meta["val"].shape)
    return "MatMul", [_input(x), _weight(w, (in_features, out_features))], {}


@kernel(aten.matmul.default)
def _matmul(node, traced):
    x, w = node.args[0], node.args[1]
    if not _parameter(traced, w) or w.meta["val"].dim() != 2:
        return None
    return "MatMul", [_input(x), _weight(w)], {}
