"""How a plan's kernels are priced: a Pricing says what each conv and linear costs at any
widths (ms from the target's latency model, or MACs or parameters counted), what the
original costs in the budget's unit, and how a figure in that unit becomes a limit on the
sum of kernel costs that the allocator works with.

A budget kind prices a PricedModel: latency budgets time the kernels of its ONNX graph, size
budgets count those of its traced graph (no export: protobuf cannot hold a model past 2 GB)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ..hardware.blocks import channels, with_channels
from .costs import full_channels


@dataclass
class PricedModel:
    """The model a budget is priced on, with example inputs. `traced` (hwprune.graph.trace) is
    the analysis' trace where one is given, else traced when first asked for; `onnx` its
    in-memory ONNX graph, exported when first asked for and kept (the landing times it again)."""
    model: object
    example_inputs: tuple
    given_trace: object = None

    @classmethod
    def of(cls, analysis) -> PricedModel:
        return cls(analysis.model, analysis.example_inputs, analysis.graph.traced)

    @cached_property
    def traced(self):
        from ..graph.trace import trace
        return self.given_trace if self.given_trace is not None else trace(self.model, self.example_inputs)

    @cached_property
    def onnx(self):
        from ..export.onnx import onnx_graph
        return onnx_graph(self.model, self.example_inputs)


@dataclass
class Pricing:
    """How kernels are priced for a budget, and the figure the budget is stated in."""
    blocks: list
    kernel_cost: object  # (block, c_in, c_out) -> cost
    unit: str
    to_internal: object  # budget figure -> budget on the sum of kernel costs
    full_figure: float  # the original's figure (ms, MACs, params)
    source: str
    full_cost: object = None  # block -> its cost at full width (default: kernel_cost at full channels)


def latency_pricing(lm, graph, progress=None) -> Pricing:
    """Kernels priced from the latency model: sweeps for a table, the formula when analytic."""
    from ..hardware.latency import MeasuredLatency, in_place, separable, sweep_key
    from ..hardware.profile import sweeps

    blocks = lm.blocks(graph)
    full = lm.predict(blocks)
    if isinstance(lm, MeasuredLatency):
        table = lm.table
        jobs = [(b, ci, co) for b in blocks if channels(b) for ci, co in sweeps(b, _lattice_of(lm), 8)]
        for i, (b, ci, co) in enumerate(jobs):  # what the table lacks is measured once and kept
            if progress is not None:
                progress("latency sweeps", i, len(jobs))
            variant = with_channels(b, ci, co)
            if not table.as_sweep_point(variant.key, sweep_key(b), (ci, co)) and lm.runtime is not None:
                lm.measure_block(variant, sweep_key(b), (ci, co))
        if table.dirty and lm.runtime is not None:
            table.save()

        def kernel_cost(block, c_in, c_out):
            ch = channels(block)
            ms = separable(table.sweep(sweep_key(block)), c_in, c_out, (ch.c_in, ch.c_out), ch.coupled)
            return ms if ms is not None else lm.kernel_ms(with_channels(block, c_in, c_out))[0]
    else:
        def kernel_cost(block, c_in, c_out):
            return lm.kernel_ms(with_channels(block, c_in, c_out))[0]
    scale, offset = full.calibration["scale"], full.calibration["offset_ms"]
    # a layer at full width priced as at any other width (its sweeps, smoothed), so that no
    # step away from it looks cheaper or dearer than it is
    at_full = {b.name: kernel_cost(b, *full_channels(b)) if channels(b) else k.ms
               for b, k in zip(blocks, full.kernels)}
    source, in_model = full.model, sum(at_full.values()) / max(full.kernels_ms, 1e-9)
    placed = in_place(lm, graph, blocks)
    if placed:  # each kernel as it runs inside this model: its time alone, times its in-place factor
        factor = {b.name: placed[b.name] / at_full[b.name] for b in blocks
                  if b.name in placed and at_full[b.name] > 0}
        alone = kernel_cost

        def kernel_cost(block, c_in, c_out):
            return alone(block, c_in, c_out) * factor.get(block.name, 1.0)
        in_model = sum(ms * factor.get(name, 1.0) for name, ms in at_full.items()) / max(full.kernels_ms, 1e-9)
        at_full = {name: ms * factor.get(name, 1.0) for name, ms in at_full.items()}
        source += f", kernels scaled to their time inside the model ({len(factor)} of {len(blocks)})"
    return Pricing(blocks, kernel_cost, "ms", lambda ms: (ms - offset) / scale * in_model, full.total_ms, source,
                   lambda b: at_full[b.name])


def _lattice_of(lm):
    from ..hardware import get_target
    return get_target(lm.table.identity["target"]).lattice


def weight_count(block, c_in: int, c_out: int):
    """(weights of a conv or linear kernel at c_in x c_out channels, its weight tensor); None
    for any other kernel."""
    ch = channels(block)
    if ch is None:
        return None
    w = next(t for t in block.inputs if t.name == block.nodes[0].input[1])
    per_in = 1 if ch.coupled else c_in / ch.c_in  # a depthwise conv's inputs are its outputs
    return math.prod(w.shape) * per_in * c_out / ch.c_out, w


def param_count(block, c_in: int, c_out: int) -> float:
    """Weights and bias of a conv or linear kernel at c_in x c_out channels (0 for any other)."""
    found = weight_count(block, c_in, c_out)
    if found is None:
        return 0.0
    return found[0] + (c_out if len(block.nodes[0].input) > 2 and block.nodes[0].input[2] else 0)


def mac_count(block, c_in: int, c_out: int) -> float:
    """Multiply-accumulates of a conv or linear kernel at c_in x c_out channels: its weights
    times the output positions (0 for any other kernel)."""
    found = weight_count(block, c_in, c_out)
    if found is None:
        return 0.0
    n, w = found
    spatial = math.prod(block.outputs[0].shape) / (block.outputs[0].shape[1 if len(w.shape) > 2 else -1])
    return n * spatial


def size_pricing(priced: PricedModel, count, unit: str) -> Pricing:
    """The convs and linears of the model's trace (hwprune.hardware.traced_blocks: the kernels
    its ONNX export would give, without exporting it) priced by count(block, c_in, c_out)
    (mac_count, param_count), stated in `unit` ("MACs", "parameters"). The budget is an
    absolute figure in that unit: the kind's row (hwprune.plan.kinds) turns a fraction into it."""
    from ..hardware.traced_blocks import traced_blocks
    return counted_pricing(traced_blocks(priced.traced), count, unit)


def counted_pricing(blocks: list, count, unit: str) -> Pricing:
    """`blocks` (hwprune.hardware.blocks) priced by count(block, c_in, c_out), in `unit`."""
    total = sum(count(b, *full_channels(b)) for b in blocks)
    return Pricing(blocks, count, unit, lambda figure: figure, total, f"{unit} of convs and linears")
