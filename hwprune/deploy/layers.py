"""Per-layer figures for the deployment report: each conv's and linear's widths and predicted
latency before and after, and the latency staircases of the most expensive ones.

A layer is a kernel of the target's latency model (hwprune.hardware.blocks) whose lead op has
channels (Conv, Gemm, MatMul with a constant weight). Kernels of the original and the slim
model are matched by name: the exporters name ONNX nodes after the module path, which a cut
does not change. A staircase is the predicted time of one layer at the widths of
its C_out (at its C_in after the cut) and of its C_in (at its C_out after the cut), from the
same latency model the planner used, with the widths the cut chose marked.
"""
from __future__ import annotations

from ..hardware.blocks import channels, onnx_blocks, with_channels
from ..hardware.latency import FREE_OPS
from ..hardware.lut import LatencyTableError

STAIRCASE_LAYERS = 3
# widths per sweep: a measured model times each one (lattice widths only), an analytic one
# computes them (every width, so that the steps between lattice widths show)
MEASURED_POINTS = 16
ANALYTIC_POINTS = 96


def latency_detail(lm, graph_before, graph_after, lattice, *, top: int = STAIRCASE_LAYERS,
                   progress=None) -> dict:
    """{"layers": [{name, kernel, c_in: [before, after], c_out: [...], ms: [...], source}] in graph
    order, "staircases": [...] of the `top` most expensive layers (by time before)}."""
    before = _layers(lm, graph_before)
    layers = _paired(before, _layers(lm, graph_after))
    blocks = {r["name"]: r["block"] for r in before}
    costly = sorted((r for r in layers if r["c_out"][1] is not None and not channels(blocks[r["name"]]).coupled),
                    key=lambda r: -r["ms"][0])[:top]
    stairs = []
    for i, r in enumerate(costly):
        if progress is not None:
            progress("staircases", i, len(costly))
        try:
            stairs.append(_staircase(lm, blocks[r["name"]], r, lattice))
        except LatencyTableError:  # an imported table without this layer's sweeps: no staircase to draw
            continue
    if progress is not None:
        progress("staircases", len(costly), len(costly))
    return {"layers": layers, "staircases": stairs}


def _paired(before: list, after: list) -> list[dict]:
    """Each layer of the original with its widths (and ms) before and after, matched by name."""
    by_name = {r["name"]: r for r in after}
    out = []
    for r in before:
        a = by_name.get(r["name"], {})
        out.append({"name": r["name"], "kernel": r["kernel"], "c_in": [r["c_in"], a.get("c_in")],
                    "c_out": [r["c_out"], a.get("c_out")], "ms": [r["ms"], a.get("ms")], "source": r["source"]})
    return out


def _layers(lm, graph) -> list[dict]:
    """The layers of a graph with their predicted ms (lm), or with widths only (lm None)."""
    blocks = lm.blocks(graph) if lm is not None else onnx_blocks(graph)
    kernels = lm.predict(blocks).kernels if lm is not None else [None] * len(blocks)
    out = []
    for block, kernel in zip(blocks, kernels):
        ch = channels(block)
        if ch is None or block.ops in FREE_OPS:
            continue
        out.append({"name": block.name, "kernel": block.describe(), "c_in": ch.c_in, "c_out": ch.c_out,
                    "ms": kernel and round(kernel.ms, 5), "source": kernel and kernel.source, "block": block})
    return out


def _staircase(lm, block, layer: dict, lattice) -> dict:
    from ..hardware.latency import AnalyticLatency

    every = isinstance(lm, AnalyticLatency)
    points = ANALYTIC_POINTS if every else MEASURED_POINTS
    c_in_after, c_out_after = layer["c_in"][1], layer["c_out"][1]
    sweep_out = [(w, _ms(lm, with_channels(block, c_in_after, w)))
                 for w in _widths(layer["c_out"][0], c_out_after, lattice, points, every)]
    sweep_in = [(w, _ms(lm, with_channels(block, w, c_out_after)))
                for w in _widths(layer["c_in"][0], c_in_after, lattice, points, every)]
    return {"name": layer["name"], "kernel": layer["kernel"], "lattice": lattice.multiple,
            "widths": "every width" if every else "lattice widths", "c_in": layer["c_in"], "c_out": layer["c_out"],
            "sweep_c_out": {"at_c_in": c_in_after, **_columns(sweep_out)},
            "sweep_c_in": {"at_c_out": c_out_after, **_columns(sweep_in)}}


def _columns(sweep: list) -> dict:
    return {"widths": [w for w, _ in sweep], "ms": [m for _, m in sweep]}


def _ms(lm, block) -> float:
    return round(lm.kernel_ms(block)[0], 5)


def _widths(full: int, chosen: int, lattice, points: int, every: bool) -> list[int]:
    """Up to `points` widths from a quarter of `full` (or `chosen`, if lower) up to `full`, evenly
    spread, with `full` and `chosen`: every width, or lattice widths only."""
    low = min(chosen, max(1, full // 4))
    cands = list(range(low, full + 1)) if every else sorted(set(lattice.candidates(full)) | {full})
    if len(cands) > points:
        step = (len(cands) - 1) / (points - 1)
        cands = sorted({cands[round(i * step)] for i in range(points)})
    return sorted(set(cands) | {full, chosen})


def detail_for(target, model, slim_model, example_inputs, *, lut=None, settings=None, progress=None) -> dict:
    """latency_detail for two models on `target`, with the latency model slim used there (the
    table measured here or given with --lut, else the analytic model). Kernels measured for it
    are kept in the table for the next run."""
    from ..export.onnx import onnx_graph
    from ..hardware.latency import latency_model, local_runtime

    runtime = local_runtime(target, settings)
    lm = latency_model(target, lut=lut, runtime=runtime, progress=progress)
    detail = latency_detail(lm, onnx_graph(model, example_inputs), onnx_graph(slim_model, example_inputs),
                            target.lattice, progress=progress)
    table = getattr(lm, "table", None)
    if runtime is not None and table is not None and table.dirty:
        table.save()
    return detail


def widths_for(model, slim_model, example_inputs) -> dict:
    """{"layers": [...]} with widths only (ms null): the HTML report's widths plot without --target."""
    from ..export.onnx import onnx_graph
    return {"layers": _paired(_layers(None, onnx_graph(model, example_inputs)),
                              _layers(None, onnx_graph(slim_model, example_inputs)))}
