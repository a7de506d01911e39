"""Before and after on a target, in one run: predicted by the target's latency model and,
where the target is this machine, measured interleaved (A B A B ...) as ../shared/MEASURING.md
asks. What `slim --target` puts under `latency_ms` and what `hwprune bench` prints."""
from __future__ import annotations

from .latency import MeasuredLatency, latency_model, local_runtime
from .measure import OrtSettings


def onnx_graphs(models: list, example_inputs) -> list:
    from ..export.onnx import onnx_graph
    return [onnx_graph(m, example_inputs) for m in models]


def latency_compare(model, slim_model, example_inputs, target, *, lut: str | None = None,
                    settings: OrtSettings | None = None, measure: bool = True, progress=None) -> dict:
    """{predicted_before, predicted_after, measured_before, measured_after, speedup, how}."""
    runtime = local_runtime(target, settings)
    lm = latency_model(target, lut=lut, runtime=runtime, progress=progress)
    graphs = onnx_graphs([model, slim_model], example_inputs)
    before, after = (lm.predict(lm.blocks(g)) for g in graphs)
    out = {"target": target.name, "predicted_before": round(before.total_ms, 4),
           "predicted_after": round(after.total_ms, 4), "measured_before": None, "measured_after": None,
           "speedup": {"predicted": round(before.total_ms / after.total_ms, 4) if after.total_ms else None,
                       "measured": None},
           "prediction": {"before": before.to_json(top=5), "after": after.to_json(top=5)}}
    how = {"latency_model": before.model, "batch": int(example_inputs[0].shape[0]) if example_inputs else None}
    if isinstance(lm, MeasuredLatency):
        how |= {"table": str(lm.table.path)}
        if lm.table.dirty and runtime is not None:
            lm.table.save()  # kernels measured for this prediction serve the next one
    if runtime is not None and measure:
        if progress is not None:
            progress("measure", 0, 1)
        t_before, t_after = runtime.models(graphs)
        out |= {"measured_before": round(t_before.median_ms, 4), "measured_after": round(t_after.median_ms, 4),
                "measured": {"before": t_before.to_json(), "after": t_after.to_json()}}
        out["speedup"]["measured"] = round(t_before.median_ms / t_after.median_ms, 4)
        how |= runtime.how() | {"order": "interleaved before, after, before, after, ..."}
        if progress is not None:
            progress("measure", 1, 1)
    out["how"] = how
    return out
