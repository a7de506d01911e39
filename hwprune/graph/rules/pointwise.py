"""Elementwise ops: unary ops keep every dim; binary ops couple operands dim by dim, aligned
from the right, where sizes agree (a size-1 broadcast dim couples nothing)."""
from __future__ import annotations

import torch

from . import Coupling, Freeze, broadcast, identity_all, rule, same

aten = torch.ops.aten

_UNARY = [
    "relu", "relu_", "relu6", "gelu", "gelu_", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "hardtanh", "hardtanh_", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "mish", "mish_", "softplus", "neg", "exp",
    "log", "sqrt", "rsqrt", "abs", "erf", "sin", "cos", "reciprocal", "clamp", "clamp_", "clamp_min",
    "clamp_max", "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout",
    "alpha_dropout_", "clone", "contiguous", "detach", "alias", "lift_fresh_copy", "_to_copy", "to",
    "type_as", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "square", "log_sigmoid", "logit", "sign", "round", "floor", "ceil", "trunc", "bitwise_not",
    "logical_not", "isnan", "isinf", "nan_to_num",
]
_BINARY = [
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub", "pow", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "bitwise_and", "bitwise_or",
    "floor_divide", "remainder", "fmod", "atan2", "where", "masked_fill", "masked_fill_", "lerp",
    "addcmul", "addcdiv", "copy_", "copy",
]


def _overloads(names):
    for name in names:
        packet = getattr(aten, name, None)
        if packet is None:
            continue
        for ov in packet.overloads():
            yield getattr(packet, ov)


@rule(*_overloads(_UNARY + _BINARY))
def elementwise(op):
    links, freezes = [], []
    for t in op.tensor_inputs():
        tl, tf = broadcast(op, t, op.out)
        links, freezes = links + tl, freezes + tf
    return Coupling(tuple(links), tuple(freezes))


@rule(aten.prelu.default, aten._prelu_kernel.default)
def prelu(op):
    x, w = op.t(0), op.t(1)
    links = identity_all(x, op.out, op.rank(x))
    if op.shape(w)[0] > 1:
        links.append(same(w, 0, x, 1))
        return Coupling(tuple(links))
    return Coupling(tuple(links), (Freeze((w, 0), "one slope shared by all channels", "position"),))


@rule(aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default)
def softmax(op):
    x, dim = op.t(0), op.dim(op.arg(1), op.t(0))
    links = [same(x, d, op.out, d) for d in range(op.rank(x))]
    return Coupling(tuple(links), (Freeze((x, dim), "softmax normalizes over this dim"),))
