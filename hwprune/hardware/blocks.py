"""A model's kernels as the runtime runs them: an ONNX graph cut into fused blocks.

A latency table is keyed by block, not by PyTorch op: onnxruntime (ORT_ENABLE_ALL) fuses a
conv with the BatchNorm folded into it, the activation after it (FusedConv) and, on its
NCHWc path, the residual Add and the activation after that. Each block can be rebuilt as a
one-block ONNX model with the input shapes it has in the model, so that it can be timed on
its own; a block's `key` is everything that changes its kernel (ops, attributes, shapes,
dtypes, and the values of small constants such as Clip bounds or Reshape targets).

Nodes whose inputs are all constants are folded by the runtime before it runs anything;
they belong to no block. hwprune.hardware.traced_blocks makes the conv and linear blocks of a
traced graph instead, without an export, for the budgets that count sizes (MACs, parameters).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import HwpruneError

ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"}
CONV_OPS = {"Conv", "FusedConv"}  # FusedConv: onnxruntime's conv with activation (and residual) inside
SMALL_INDEX = 64  # integer constants up to this size are shapes, axes or indices: their values matter
# inputs (by position) that are the op's parameters whatever their type: a Resize's float scales
# set its output's size, and random values there are refused ("Scale value should be greater than 0")
PARAMETER_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,)}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple
    dtype: int  # onnx.TensorProto data type
    value: np.ndarray | None = field(default=None, compare=False)  # constants only
    parameter: bool = False  # read by an op as a parameter (PARAMETER_INPUTS), not as weights

    @property
    def constant(self) -> bool:
        return self.value is not None

    @property
    def meaningful(self) -> bool:
        """A constant whose values change the kernel (a Reshape target, Clip bounds), unlike
        weights, whose values never change the time."""
        return self.constant and (self.parameter or self.value.size == 1
                                  or self.value.dtype.kind in "iub" and self.value.size <= SMALL_INDEX)

    def signature(self):
        sig = [list(self.shape), onnx.TensorProto.DataType.Name(self.dtype)]
        if self.meaningful:
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
        if any(not t.constant and t.dtype == onnx.TensorProto.BOOL for t in self.inputs):
            sig["bool_feeds"] = "zeros"  # timed with random bits before: those entries do not apply
        return hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        shapes = ", ".join("x".join(map(str, t.shape)) for t in self.inputs if not t.constant)
        weights = ", ".join("x".join(map(str, t.shape)) for t in self.inputs if t.constant and t.value.size > 1)
        return f"{self.ops}({shapes}{'; w ' + weights if weights else ''})"

    def to_model(self, seed: int = 0) -> onnx.ModelProto:
        """This block alone: variable inputs become graph inputs, constants initializers
        (weights random of the same shape; shapes, indices and bounds keep their values)."""
        rng = np.random.default_rng(seed)
        inits, graph_inputs = [], []
        for t in self.inputs:
            if t.constant:
                value = t.value if t.meaningful else _random(rng, t.value.shape, t.value.dtype)
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
    # masks and flags (0 is valid for any gather): a model's masks come in runs, so a Where
    # on them predicts its branches; random bits made MiniLM's Where twice its time in place
    return np.zeros(shape, dtype)


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
    """The model's runtime kernels in graph order, at the shapes one run of the model gives
    them (the exporters give static shapes for fixed example inputs)."""
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise HwpruneError("the ONNX model keeps its weights in an external file: load it with "
                           "onnx.load(path, load_external_data=True) before cutting it into blocks")
    nodes = list(model.graph.node)  # positions identify nodes: protobuf wrappers have no stable id()
    values = _run_every_tensor(model)
    constant = {init.name for init in model.graph.initializer}
    folded = set()
    for i, node in enumerate(nodes):  # what the runtime folds before it runs anything
        real = [n for n in node.input if n]
        if node.op_type in ("Constant", "Shape") or (real and all(n in constant for n in real)):
            constant.update(node.output)
            folded.add(i)
    parameters = {node.input[k] for node in nodes for k in PARAMETER_INPUTS.get(node.op_type, ())
                  if k < len(node.input) and node.input[k]}
    tensors = {name: Tensor(name, tuple(v.shape), helper.np_dtype_to_tensor_dtype(v.dtype),
                            v if name in constant else None, name in parameters) for name, v in values.items()}
    consumers: dict[str, list] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    graph_outputs = {o.name for o in model.graph.output}
    opset = tuple((o.domain, o.version) for o in model.opset_import)
    blocks, taken = [], set(folded)
    for i in range(len(nodes)):
        if i in taken:
            continue
        chain = _fusion_chain(i, nodes, consumers, graph_outputs, taken)
        taken.update(chain)
        blocks.append(_block([nodes[j] for j in chain], tensors, opset))
    return blocks


def runtime_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph after onnxruntime's hardware-independent fusions (ORT_ENABLE_EXTENDED:
    conv + activation, conv + add + activation, GELU, LayerNorm, MatMul + bias, ...), so that
    a block is a kernel the CPU provider really runs. Layout (NCHWc) is left to each block's
    own session at ORT_ENABLE_ALL."""
    import os
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hwprune-ort-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
            raise HwpruneError(f"onnxruntime cannot load the model's ONNX graph ({type(e).__name__}: {e}); "
                               "the latency table needs a graph onnxruntime runs") from e
        return onnx.load(opts.optimized_model_filepath, load_external_data=True)


def _run_every_tensor(model: onnx.ModelProto) -> dict:
    """{tensor name: value} for every initializer, input and node output: one run of the
    unoptimized graph in onnxruntime with every tensor made an output."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        probe.graph.output.extend(onnx.ValueInfoProto(name=o) for o in node.output if o and o not in known)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception types
        raise HwpruneError(f"onnxruntime cannot load the model's ONNX graph ({type(e).__name__}: {e}); "
                           "the latency table needs a graph onnxruntime runs") from e
    rng = np.random.default_rng(0)
    initializers = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        feeds[vi.name] = _random(rng, shape, helper.tensor_dtype_to_np_dtype(t.elem_type))
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feeds)))
    values.update(feeds)
    values.update({i.name: numpy_helper.to_array(i) for i in model.graph.initializer})
    return {k: np.asarray(v) for k, v in values.items()}


def _fusion_chain(i: int, nodes: list, consumers: dict, graph_outputs: set, taken: set) -> list:
    """conv [+ BatchNormalization] [+ Add] [+ activation], as onnxruntime's CPU provider fuses
    them; any other node is a block of its own. An Add of two conv outputs goes with the
    first conv in graph order (`taken`), never with both. Returns node positions."""
    chain = [i]
    if nodes[i].op_type not in CONV_OPS:
        return chain
    for wanted in (("BatchNormalization",), ("Add",), tuple(ACTIVATIONS)):
        out = nodes[chain[-1]].output[0]
        users = consumers.get(out, [])
        if out in graph_outputs or len(users) != 1 or nodes[users[0]].op_type not in wanted or users[0] in taken:
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
                if name not in tensors:
                    raise HwpruneError(f"ONNX node {n.name or n.op_type} reads {name}, which no node makes")
                inputs.append(tensors[name])
    last = chain[-1]
    outputs = [tensors[o] for o in last.output if o in tensors]
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


_CHANNEL_DIMS = {"Conv": _conv_dims, "FusedConv": _conv_dims, "Gemm": _gemm_dims, "MatMul": _gemm_dims}


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
    conv = lead.op_type in CONV_OPS
    w_name = lead.input[1]
    resized = {}
    for t in block.inputs:
        shape = list(t.shape)
        if t.name == w_name:
            if conv:
                shape[0], shape[1] = c_out, (1 if ch.coupled else c_in)
            else:
                trans_b = any(a.name == "transB" and helper.get_attribute_value(a) for a in lead.attribute)
                shape = [c_out, c_in] if trans_b else [c_in, c_out]
        elif t.name == lead.input[0]:
            shape[1 if conv else -1] = c_in
        elif t.constant and t.value.ndim == 1 and len(shape) == 1 and shape[0] == ch.c_out:
            shape[0] = c_out  # bias, BatchNorm parameters
        elif not t.constant and len(shape) >= 2 and conv and shape[1] == ch.c_out:
            shape[1] = c_out  # the residual operand of a fused Add
        resized[t.name] = _reshaped(t, shape)
    outputs = []
    for t in block.outputs:
        shape = list(t.shape)
        shape[1 if conv else -1] = c_out
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
