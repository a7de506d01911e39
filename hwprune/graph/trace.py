"""Trace a module into an ATen-level fx graph whose parameters are named tensors.

torch.export (non-strict, no decompositions) keeps high-level ops (conv2d, batch_norm,
linear, ...) and lifts every parameter and buffer to a placeholder whose state-dict name
is in the graph signature. That is all the channel analysis and the surgery need.
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError, TraceError


@dataclass(frozen=True)
class TracedGraph:
    """An fx graph in which every tensor is a node and every parameter a placeholder.

    placeholders: for each placeholder node name, what it is: ("param"|"buffer"|"constant", fqn)
    or ("input", index into the flat example inputs).
    outputs: names of the tensor nodes that are model outputs.
    """

    gm: torch.fx.GraphModule
    tracer: str
    placeholders: dict
    outputs: tuple
    constants: dict = field(default_factory=dict)
    functions: tuple = ()  # custom autograd Functions met while tracing: (name, file, first, last line)
    note: str = ""  # why the fallback tracer was used

    @property
    def graph(self) -> torch.fx.Graph:
        return self.gm.graph


def _flat_tensors(obj) -> list:
    leaves, _ = torch.utils._pytree.tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def input_tuple(example_inputs) -> tuple:
    """Example inputs as the tuple of positional arguments forward takes (a lone tensor is one)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)):
        return tuple(example_inputs)
    raise InputError(f"example inputs must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}")


def check_inputs(model: nn.Module, example_inputs: tuple) -> None:
    """Run the model once so that a wrong input shape is an InputError, not a trace failure."""
    try:
        with torch.no_grad():
            model(*example_inputs)
    except Exception as e:  # the model's own error says what shape it wanted
        shapes = ", ".join(str(tuple(t.shape)) for t in _flat_tensors(example_inputs))
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"the model rejects example inputs of shape {shapes}: {first[:300]}; "
            "give inputs it accepts with --input-shape or --example-inputs") from e


GRAPH = "exported graph"  # the model is an ATen graph already (a .pt2): surgery edits the graph


def is_exported_graph(model) -> bool:
    """A GraphModule whose nodes carry export's metadata (ExportedProgram.module())."""
    return isinstance(model, torch.fx.GraphModule) and any(
        n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and "val" in n.meta
        for n in model.graph.nodes)


def normal_tensors(model: nn.Module) -> None:
    """Tensors a module made and kept while it ran under torch.inference_mode (ConViT caches its
    relative indices on the first call) are inference tensors, which torch.export refuses ("cannot
    be saved for backward"): each is replaced by a normal copy of the same values."""
    for mod in model.modules():
        for name, value in list(vars(mod).items()):
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and value.is_inference():
                setattr(mod, name, value.clone())
        for name, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_inference():
                mod._buffers[name] = buf.clone()


def trace(model: nn.Module, example_inputs: tuple) -> TracedGraph:
    """torch.export first; torch.fx.symbolic_trace only where export fails. A model that is an
    exported graph already (loaded from a .pt2) is taken as it is."""
    if is_exported_graph(model):
        return _from_graph_module(model)
    normal_tensors(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception as export_error:
        first = str(export_error).strip().splitlines()[0][:200] if str(export_error).strip() else ""
        try:
            traced = trace_symbolic(model, example_inputs)
            note = f"torch.export failed ({type(export_error).__name__}: {first}); used torch.fx.symbolic_trace"
            return dataclasses.replace(traced, functions=custom_functions(traced.graph), note=note)
        except Exception as fx_error:
            raise TraceError(
                f"cannot trace {type(model).__name__}: torch.export failed with "
                f"{type(export_error).__name__}: {str(export_error).splitlines()[0][:200]}; "
                f"torch.fx.symbolic_trace failed with {type(fx_error).__name__}: "
                f"{str(fx_error).splitlines()[0][:200]}. Make forward traceable (no data-dependent "
                "control flow) or pass a factory that returns a traceable module") from export_error
    traced = _from_exported(ep)
    return dataclasses.replace(traced, functions=custom_functions(traced.graph))


def _from_exported(ep) -> TracedGraph:
    from torch.export.graph_signature import InputKind, OutputKind
    kinds = {InputKind.PARAMETER: "param", InputKind.BUFFER: "buffer",
             InputKind.CONSTANT_TENSOR: "constant"}
    placeholders, n_user = {}, 0
    for spec in ep.graph_signature.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            placeholders[name] = ("input", n_user)
            n_user += 1
        elif spec.kind in kinds:
            placeholders[name] = (kinds[spec.kind], spec.target)
        else:
            placeholders[name] = ("other", str(spec.kind))
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    flat_out = torch.utils._pytree.tree_leaves(out_node.args[0])
    user_out = [a for a, s in zip(flat_out, ep.graph_signature.output_specs)
                if s.kind == OutputKind.USER_OUTPUT]
    outputs = tuple(n.name for n in user_out if isinstance(n, torch.fx.Node))
    return TracedGraph(gm=ep.graph_module, tracer="torch.export", placeholders=placeholders,
                       outputs=outputs, constants=dict(ep.constants))


def _from_graph_module(gm) -> TracedGraph:
    kinds = {n: "param" for n, _ in gm.named_parameters(remove_duplicate=False)}
    kinds |= {n: "buffer" for n, _ in gm.named_buffers(remove_duplicate=False)}
    return from_get_attr_graph(gm, GRAPH, lambda node, value: (kinds[node.target], node.target)
                               if node.target in kinds else None)


def from_get_attr_graph(gm, tracer: str, name_of) -> TracedGraph:
    """A TracedGraph from an ATen GraphModule that reads its tensors with get_attr nodes.
    name_of(node, value) gives ("param"|"buffer", state-dict name), or None for a constant."""
    placeholders, constants, n_in = {}, {}, 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            placeholders[node.name] = ("input", n_in)
            n_in += 1
        elif node.op == "get_attr":
            value = _attr(gm, node.target)
            node.meta.setdefault("val", value)
            kind = name_of(node, value)
            if kind is None:
                constants[node.name] = value
                kind = ("constant", node.name)
            placeholders[node.name] = kind
    out = next(n for n in gm.graph.nodes if n.op == "output")
    outputs = tuple(n.name for n in torch.utils._pytree.tree_leaves(out.args[0]) if isinstance(n, torch.fx.Node))
    return TracedGraph(gm=gm, tracer=tracer, placeholders=placeholders, outputs=outputs, constants=constants,
                       functions=custom_functions(gm.graph))


def _attr(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _function_classes():
    todo, seen = list(torch.autograd.Function.__subclasses__()), []
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return seen


def custom_functions(graph) -> tuple:
    """Custom autograd Functions whose forward was inlined into the graph, found by matching
    the nodes' stack frames against each Function's forward: (name, file, first, last line).
    Non-strict export traces through them, but their backward may assume the original sizes."""
    ranges = {}
    for cls in _function_classes():
        code = getattr(cls.forward, "__code__", None)
        if code is None or "/torch/" in code.co_filename:
            continue
        last = max((ln for *_, ln in code.co_lines() if ln), default=code.co_firstlineno)
        ranges.setdefault(code.co_filename, []).append((cls.__qualname__, code.co_filename, code.co_firstlineno, last))
    found = {}
    for n in graph.nodes:
        for f, line, _ in stack_frames(n):
            for fn in ranges.get(f, ()):
                if fn[2] <= int(line) <= fn[3]:
                    found[fn[0]] = fn
    return tuple(found.values())


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def stack_frames(node) -> list:
    """(file, line, function) of each frame of the node's stack trace, outermost first."""
    return _FRAME.findall(node.meta.get("stack_trace") or "")


def short_path(path: str) -> str:
    """A source path from the package or work root on: what a report prints."""
    for marker in ("site-packages/", "/work/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# ---- fallback tracer --------------------------------------------------------------------------
# For models torch.export cannot take (data-dependent sizes, custom ops without a fake kernel):
# torch.fx.symbolic_trace, then lowered to the same high-level ATen ops as export by running it
# once with real tensors (make_fx, pre-dispatch). Parameters come back as get_attr constants;
# their state-dict names are found by tensor identity.

def trace_symbolic(model, example_inputs) -> TracedGraph:
    from torch.fx.experimental.proxy_tensor import make_fx
    gm = torch.fx.symbolic_trace(model)
    lowered = make_fx(gm, tracing_mode="real", pre_dispatch=True, record_stack_traces=True)(*example_inputs)
    names = {id(p): ("param", n) for n, p in model.named_parameters(remove_duplicate=False)}
    names |= {id(b): ("buffer", n) for n, b in model.named_buffers(remove_duplicate=False)}
    return from_get_attr_graph(lowered, "symbolic_trace", lambda node, value: names.get(id(value)))
