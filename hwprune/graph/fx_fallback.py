"""Fallback tracer for models torch.export cannot take (data-dependent sizes, custom ops
without a fake kernel): torch.fx.symbolic_trace, then lowered to the same high-level ATen
ops as export by running it once with real tensors (make_fx, pre-dispatch). Parameters come
back as get_attr constants; their state-dict names are found by tensor identity."""
from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from .trace import TracedGraph, from_get_attr_graph


def trace_symbolic(model, example_inputs) -> TracedGraph:
    gm = torch.fx.symbolic_trace(model)
    lowered = make_fx(gm, tracing_mode="real", pre_dispatch=True, record_stack_traces=True)(*example_inputs)
    names = {id(p): ("param", n) for n, p in model.named_parameters(remove_duplicate=False)}
    names |= {id(b): ("buffer", n) for n, b in model.named_buffers(remove_duplicate=False)}
    return from_get_attr_graph(lowered, "symbolic_trace", lambda node, value: names.get(id(value)))
