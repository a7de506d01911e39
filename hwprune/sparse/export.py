"""Writing a sparse model for other runtimes.

ONNX, two forms:
- dense (the default): every BSR layer becomes nn.Linear / a 1x1 nn.Conv2d holding its dense
  weight with the zeros. Any ONNX runtime runs it (onnxruntime: its dense MatMul/Gemm/Conv;
  the zeros cost as much as any weight) and hwprune checks it in onnxruntime against PyTorch.
- custom op: each BSR layer is one node `hwprune.BSRLinear` (domain "hwprune", version 1) with
  inputs x, crow_indices, col_indices, values[, bias], the attribute out_features, and the
  op's layout (hwprune.sparse.ops). onnxruntime has no kernel for it, so the file is checked
  structurally only (onnx.checker, one node per BSR layer); it is for runtimes where a
  hwprune.BSRLinear custom-op kernel is registered.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import HwpruneError
from .bsr import BSRConv1x1, BSRLinear

DOMAIN = "hwprune"


def densify(model: nn.Module) -> nn.Module:
    """A copy of `model` with every BSR layer replaced by the dense layer it stands for."""
    dense = copy.deepcopy(model)
    for name, module in list(dense.named_modules()):
        if not isinstance(module, BSRLinear):
            continue
        weight = module.dense_weight()
        if isinstance(module, BSRConv1x1):
            layer = nn.Conv2d(module.in_features, module.out_features, 1, stride=module.stride,
                              bias=module.bias is not None)
            weight = weight[:, :, None, None]
        else:
            layer = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        parent, _, leaf = name.rpartition(".")
        setattr(dense.get_submodule(parent) if parent else dense, leaf, layer.to(weight.device))
    return dense


def export_onnx_dense(model: nn.Module, example_inputs: tuple, path: Path) -> dict:
    from ..export.onnx import export_onnx
    return export_onnx(densify(model).eval(), example_inputs, path) | {"form": "dense weights with zeros"}


def _translation():
    import onnxscript

    # a bare node in the hwprune domain (no function body), described by its own schema
    node = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, 1), "BSRLinear", _schema())

    def bsr_linear(x, crow_indices, col_indices, values, bias=None, out_features: int = 0):
        inputs = (x, crow_indices, col_indices, values) + (() if bias is None else (bias,))
        return node(*inputs, out_features=out_features)
    return {torch.ops.hwprune.bsr_linear.default: bsr_linear}


def _schema():
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    return OpSchema(
        "BSRLinear", DOMAIN, 1, doc="y = x @ W^T + bias, W in BSR with blocks stored transposed (in x out)",
        inputs=[param("x", "T"), param("crow_indices", "I"), param("col_indices", "I"), param("values", "T"),
                param("bias", "T", param_option=optional)],
        outputs=[param("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "values"),
                          ("I", ["tensor(int64)", "tensor(int32)"], "indices")],
        attributes=[OpSchema.Attribute("out_features", OpSchema.AttrType.INT, "rows of W")])


def export_onnx_custom_op(model: nn.Module, example_inputs: tuple, path: Path) -> dict:
    """Export with hwprune::bsr_linear as hwprune.BSRLinear nodes; checked structurally."""
    import onnx

    path = Path(path)
    wanted = sum(isinstance(m, BSRLinear) for m in model.modules())
    try:
        program = torch.onnx.export(model.eval(), tuple(example_inputs), dynamo=True, opset_version=18,
                                    custom_translation_table=_translation(), verbose=False)
        program.save(str(path))
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # the exporter raises many types; all mean the same here
        raise HwpruneError(f"{path.name}: ONNX export with the hwprune custom op failed ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]}); nothing was written") from e
    nodes = sum(n.domain == DOMAIN for n in proto.graph.node)
    if nodes != wanted:
        raise HwpruneError(f"{path.name}: the ONNX graph has {nodes} hwprune.BSRLinear nodes for {wanted} BSR "
                           "layers; nothing was written")
    return {"form": f"custom op {DOMAIN}.BSRLinear", "nodes": nodes, "checked": "onnx.checker and node count only: "
            "no runtime here implements hwprune.BSRLinear"}
