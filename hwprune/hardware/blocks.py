"""A model's kernels as the runtime runs them: an ONNX graph cut into fused blocks.

A latency table is keyed by block, not by PyTorch op: onnxruntime (ORT_ENABLE_ALL) fuses a
conv with the BatchNorm folded into it, the activation after it (FusedConv) and, on its
NCHWc path, the residual Add and the activation after that. Each block can be rebuilt as a
one-block ONNX model with the input shapes it has in the model, so that it can be timed on
its own; a block's `key` is everything that changes its kernel (ops, attributes, shapes,
dtypes, and the values of small constants such as Clip bounds or Reshape targets).

Nodes whose inputs are all constants are folded by the runtime before it runs anything;
they belong to no block.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..errors import HwpruneError

ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"}
SMALL_CONSTANT = 16  # constants up to this many elements are part of a block's key (shapes, bounds)


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple
    dtype: int  # onnx.TensorProto data type
    value: np.ndarray | None = field(default=None, compare=False)  # constants only

    @property
    def constant(self) -> bool:
        return self.value is not None

    def signature(self):
        sig = [list(self.shape), onnx.TensorProto.DataType.Name(self.dtype)]
        if self.constant and self.value.size <= SMALL_CONSTANT:
            sig.append(self.value.ravel().tolist())
        return sig


@dataclass(frozen=True)
class Block:
    """Nodes the runtime runs as one kernel; inputs are tensors from outside the block."""
    nodes: tuple  # onnx.NodeProto, in graph order
    inputs: tuple  # Tensor
    outputs: tuple  # Tensor
    opset: tuple  # ((domain, version), ...)

    @property
    def ops(self) -> str:
        return "+".join(n.op_type for n in self.nodes)

    @property
    def name(self) -> str:
        return self.nodes[0].name or self.nodes[0].output[0]

    @property
    def key(self) -> str:
        """A short stable hash of what the kernel depends on (not of weights' values)."""
        sig = {"ops": [[n.domain, n.op_type, _attributes(n)] for n in self.nodes],
               "in": [t.signature() for t in self.inputs], "out": [t.signature() for t in self.outputs]}
        return hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        shapes = ", ".join("x".join(map(str, t.shape)) for t in self.inputs if not t.constant)
        weights = ", ".join("x".join(map(str, t.shape)) for t in self.inputs if t.constant and t.value.size > 1)
        return f"{self.ops}({shapes}{'; w ' + weights if weights else ''})"

    def to_model(self, seed: int = 0) -> onnx.ModelProto:
        """This block alone: variable inputs become graph inputs, constants initializers
        (weights random of the same shape; small constants keep their values)."""
        rng = np.random.default_rng(seed)
        inits, graph_inputs = [], []
        for t in self.inputs:
            if t.constant:
                value = t.value if t.value.size <= SMALL_CONSTANT else _random(rng, t.value.shape, t.value.dtype)
                inits.append(numpy_helper.from_array(value, t.name))
            else:
                graph_inputs.append(helper.make_tensor_value_info(t.name, t.dtype, list(t.shape)))
        outputs = [helper.make_tensor_value_info(t.name, t.dtype, list(t.shape)) for t in self.outputs]
        graph = helper.make_graph(list(self.nodes), f"block_{self.key}", graph_inputs, outputs, inits)
        opsets = [helper.make_opsetid(d, v) for d, v in self.opset]
        return helper.make_model(graph, opset_imports=opsets, producer_name="hwprune")

    def feeds(self, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        return {t.name: _random(rng, t.shape, onnx.helper.tensor_dtype_to_np_dtype(t.dtype))
                for t in self.inputs if not t.constant}


def _random(rng, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return np.zeros(shape, dtype)  # indices: 0 is valid for any gather


def _attributes(node) -> list:
    out = []
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value).ravel().tolist()
        elif isinstance(value, (list, tuple)):
            value = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value]
        elif not isinstance(value, (int, float, str)):
            value = str(type(value).__name__)
        out.append([a.name, value])
    return out


def onnx_blocks(model: onnx.ModelProto) -> list[Block]:
    """The model's runtime kernels in graph order. Shapes must be static (the exporters give
    static shapes for fixed example inputs)."""
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise HwpruneError("the ONNX model keeps its weights in an external file: load it with "
                           "onnx.load(path, load_external_data=True) before cutting it into blocks")
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    tensors = _tensor_table(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    opset = tuple((o.domain, o.version) for o in model.opset_import)
    blocks, taken = [], set()
    for node in graph.node:
        if id(node) in taken or _is_constant(node, tensors):
            if node.op_type == "Constant" or _is_constant(node, tensors):
                _fold(node, tensors)
            continue
        chain = _fusion_chain(node, consumers, graph_outputs, taken)
        taken.update(id(n) for n in chain)
        blocks.append(_block(chain, tensors, opset))
    return blocks


def _tensor_table(graph) -> dict:
    table = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        table[vi.name] = Tensor(vi.name, dims, t.elem_type)
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        table[init.name] = Tensor(init.name, tuple(value.shape), init.data_type, value)
    return table


def _is_constant(node, tensors) -> bool:
    if node.op_type == "Constant":
        return True
    if node.op_type == "Shape":  # of a static shape: folded like any constant
        t = tensors.get(node.input[0])
        return t is not None and -1 not in t.shape
    real = [n for n in node.input if n]
    return bool(real) and all(n in tensors and tensors[n].constant for n in real)


def _fold(node, tensors) -> None:
    """Evaluate a constant node so that what reads it sees a constant (the runtime folds it)."""
    if node.op_type == "Constant":
        value = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].type == onnx.AttributeProto.TENSOR \
            else np.asarray(helper.get_attribute_value(node.attribute[0]))
        tensors[node.output[0]] = Tensor(node.output[0], tuple(value.shape),
                                         helper.np_dtype_to_tensor_dtype(value.dtype), value)
        return
    if node.op_type == "Shape":
        start = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "start"), 0)
        end = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "end"), None)
        value = np.asarray(tensors[node.input[0]].shape[start:end], dtype=np.int64)
        tensors[node.output[0]] = Tensor(node.output[0], value.shape, onnx.TensorProto.INT64, value)
        return
    from onnx.reference import ReferenceEvaluator
    feeds = {n: tensors[n].value for n in node.input if n}
    inputs = [helper.make_tensor_value_info(n, tensors[n].dtype, list(tensors[n].shape)) for n in feeds]
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    try:
        values = ReferenceEvaluator(helper.make_model(helper.make_graph([node], "fold", inputs, outputs))).run(None, feeds)
    except Exception:  # noqa: BLE001 -- an op the reference cannot fold stays a (tiny) block input
        return
    for name, value in zip(node.output, values):
        value = np.asarray(value)
        tensors[name] = Tensor(name, tuple(value.shape), helper.np_dtype_to_tensor_dtype(value.dtype), value)


def _fusion_chain(node, consumers, graph_outputs, taken: set) -> list:
    """conv [+ BatchNormalization] [+ Add] [+ activation], as onnxruntime's CPU provider fuses
    them; any other node is a block of its own. An Add of two conv outputs goes with the
    first conv in graph order (`taken`), never with both."""
    chain = [node]
    if node.op_type != "Conv":
        return chain
    for wanted in (("BatchNormalization",), ("Add",), tuple(ACTIVATIONS)):
        out = chain[-1].output[0]
        users = consumers.get(out, [])
        if out in graph_outputs or len(users) != 1 or users[0].op_type not in wanted or id(users[0]) in taken:
            continue
        chain.append(users[0])
    return chain


def _block(chain: list, tensors: dict, opset: tuple) -> Block:
    produced = {o for n in chain for o in n.output}
    inputs, seen = [], set()
    for n in chain:
        for name in n.input:
            if name and name not in produced and name not in seen:
                seen.add(name)
                if name not in tensors or -1 in tensors[name].shape:
                    raise HwpruneError(f"ONNX node {n.name or n.op_type} reads {name}, whose shape is not "
                                       "static: export with fixed example inputs (no dynamic axes)")
                inputs.append(tensors[name])
    last = chain[-1]
    outputs = [tensors[o] for o in last.output if o in tensors]
    if not outputs:
        raise HwpruneError(f"ONNX node {last.name or last.op_type} has no inferred output shape: "
                           "the latency table needs static shapes")
    return Block(tuple(chain), tuple(inputs), tuple(outputs), opset)


# ---------------------------------------------------------------- channel sweeps
# A prunable kernel's latency as a function of (C_in, C_out): which dims of which block
# tensors carry the input and the output channels. One entry per leading op type.

@dataclass(frozen=True)
class Channels:
    c_in: int
    c_out: int
    coupled: bool  # depthwise: C_in = C_out = groups, one sweep moves both


def channels(block: Block) -> Channels | None:
    """The block's (C_in, C_out) if its leading op is a weighted GEMM-like kernel."""
    lead = block.nodes[0]
    if lead.op_type not in _CHANNEL_DIMS:
        return None
    dims = _CHANNEL_DIMS[lead.op_type](block)
    if dims is None:
        return None
    c_in, c_out, groups = dims
    if groups != 1 and not (groups == c_in == c_out):
        return None  # grouped, not depthwise: a sweep would have to keep the group structure
    return Channels(c_in, c_out, groups != 1)


def _weight(block: Block, index: int) -> Tensor | None:
    lead = block.nodes[0]
    if len(lead.input) <= index or not lead.input[index]:
        return None
    t = next((t for t in block.inputs if t.name == lead.input[index]), None)
    return t if t is not None and t.constant else None


def _conv_dims(block: Block):
    w = _weight(block, 1)
    if w is None:
        return None
    groups = next((helper.get_attribute_value(a) for a in block.nodes[0].attribute if a.name == "group"), 1)
    return w.shape[1] * groups, w.shape[0], groups


def _gemm_dims(block: Block):
    w = _weight(block, 1)
    if w is None or len(w.shape) != 2:
        return None
    trans_b = next((helper.get_attribute_value(a) for a in block.nodes[0].attribute if a.name == "transB"), 0)
    k, n = (w.shape[1], w.shape[0]) if trans_b else w.shape
    return k, n, 1


_CHANNEL_DIMS = {"Conv": _conv_dims, "Gemm": _gemm_dims, "MatMul": _gemm_dims}


def with_channels(block: Block, c_in: int, c_out: int) -> Block:
    """The same kernel with C_in and C_out channels: what a cut of its layer would run.
    Every block tensor whose dim carries the old C_in or C_out is resized."""
    ch = channels(block)
    if ch is None:
        raise HwpruneError(f"block {block.describe()} has no channel sweep (only dense or depthwise "
                           "Conv, Gemm and MatMul with a constant weight have one)")
    if ch.coupled and c_in != c_out:
        raise HwpruneError(f"block {block.describe()} is depthwise: C_in and C_out move together")
    lead = block.nodes[0]
    w_name = lead.input[1]
    resized = {}
    for t in block.inputs:
        shape = list(t.shape)
        if t.name == w_name:
            if lead.op_type == "Conv":
                shape[0], shape[1] = c_out, (1 if ch.coupled else c_in)
            else:
                trans_b = any(a.name == "transB" and helper.get_attribute_value(a) for a in lead.attribute)
                shape = [c_out, c_in] if trans_b else [c_in, c_out]
        elif t.name == lead.input[0]:
            shape[1 if lead.op_type == "Conv" else -1] = c_in
        elif t.constant and t.value.ndim == 1 and len(shape) == 1 and shape[0] == ch.c_out:
            shape[0] = c_out  # bias, BatchNorm parameters
        elif not t.constant and len(shape) >= 2 and lead.op_type == "Conv" and shape[1] == ch.c_out:
            shape[1] = c_out  # the residual operand of a fused Add
        resized[t.name] = _reshaped(t, shape)
    outputs = []
    for t in block.outputs:
        shape = list(t.shape)
        shape[1 if lead.op_type == "Conv" else -1] = c_out
        outputs.append(Tensor(t.name, tuple(shape), t.dtype))
    nodes = list(block.nodes)
    if ch.coupled:
        conv = onnx.NodeProto()
        conv.CopyFrom(lead)
        for a in conv.attribute:
            if a.name == "group":
                a.i = c_out
        nodes[0] = conv
    return Block(tuple(nodes), tuple(resized[t.name] for t in block.inputs), tuple(outputs), block.opset)


def _reshaped(t: Tensor, shape: list) -> Tensor:
    if tuple(shape) == t.shape:
        return t
    value = None if t.value is None else np.zeros(shape, t.value.dtype)
    return Tensor(t.name, tuple(shape), t.dtype, value)
