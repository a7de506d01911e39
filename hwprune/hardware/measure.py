"""Timing ONNX models in onnxruntime the way ../shared/MEASURING.md asks.

- The session is fixed: CPUExecutionProvider, ORT_ENABLE_ALL (the NCHWc layout that makes
  channel alignment matter exists only at that level), `threads` intra-op threads, one
  inter-op thread, sequential execution.
- Warm up, then time single runs in rounds until the median moves by less than 1% from one
  round to the next, within a time bound; min and max are kept beside the median.
- Several models are compared in one run, interleaved (A B A B ...), never across runs.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    def to_json(self) -> dict:
        return {"median_ms": round(self.median_ms, 5), "min_ms": round(self.min_ms, 5),
                "max_ms": round(self.max_ms, 5), "repeats": self.repeats}

    @classmethod
    def of(cls, samples: list) -> "Timing":
        ms = [s * 1e3 for s in samples]
        return cls(statistics.median(ms), min(ms), max(ms), len(ms))


@dataclass(frozen=True)
class OrtSettings:
    threads: int = 1
    warmup_s: float = 0.05
    max_s: float = 1.0  # per model: the bound in time on the repeats
    min_repeats: int = 15
    settle: float = 0.01  # stop when a round moves the median by less than this

    def session(self, model, profile_prefix: str | None = None):
        """An InferenceSession of an onnx.ModelProto, bytes or a path; with profile_prefix,
        onnxruntime's profiler records every node's kernel time."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if profile_prefix is not None:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model) \
            if not isinstance(model, bytes) else model
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])

    def how(self) -> dict:
        from .processor import onnxruntime_version, this_processor
        return {"runtime": f"onnxruntime {onnxruntime_version()} CPUExecutionProvider",
                "graph_optimization": "ORT_ENABLE_ALL", "intra_op_threads": self.threads,
                "inter_op_threads": 1, "processor": this_processor().name,
                "statistic": f"median of single runs after {self.warmup_s * 1e3:.0f} ms warm-up, rounds until "
                             f"the median moves < {self.settle:.0%} (at least {self.min_repeats} runs, "
                             f"at most {self.max_s:g} s per model)"}


def _feeds_for(session, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(double)": np.float64}[i.type]
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f" \
            else np.zeros(shape, dtype)
    return feeds


def time_sessions(sessions: list, settings: OrtSettings, feeds: list | None = None) -> list[Timing]:
    """Time several sessions interleaved: one run of each in turn, in rounds, until every
    median settles or the time bound (max_s per session) is spent."""
    feeds = feeds or [_feeds_for(s) for s in sessions]
    runs = [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)]
    end = time.perf_counter() + settings.warmup_s * len(runs)
    for run in runs:
        run()  # the first run allocates; never timed
    while time.perf_counter() < end:
        for run in runs:
            run()
    samples: list[list[float]] = [[] for _ in runs]
    previous = [None] * len(runs)
    deadline = time.perf_counter() + settings.max_s * len(runs)
    per_round = settings.min_repeats
    while True:
        for _ in range(per_round):
            for run, out in zip(runs, samples):
                t0 = time.perf_counter()
                run()
                out.append(time.perf_counter() - t0)
        medians = [statistics.median(s) for s in samples]
        settled = all(p is not None and abs(m - p) <= settings.settle * m for m, p in zip(medians, previous))
        if settled or time.perf_counter() > deadline:
            return [Timing.of(s) for s in samples]
        previous = medians
        per_round = max(per_round // 2, 5)


def time_model(model, settings: OrtSettings, feeds: dict | None = None) -> Timing:
    session = settings.session(model)
    return time_sessions([session], settings, None if feeds is None else [feeds])[0]


# Layout conversions that onnxruntime inserts around a kernel timed alone (graph inputs and
# outputs are NCHW); inside a model they run only where the NCHWc region begins and ends.
ISOLATION_OPS = {"ReorderInput", "ReorderOutput"}


def _profiled(model, settings: OrtSettings, feeds: dict | None, budget_s: float, max_runs: int):
    """Run `model` with onnxruntime's profiler on: (warm-up runs, {node: [ms per run]}) over the
    nodes that would run inside a model too (not the layout reorders of a kernel run alone)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hwprune-prof-") as tmp:
        session = settings.session(model, profile_prefix=os.path.join(tmp, "p"))
        feeds = feeds if feeds is not None else _feeds_for(session)
        session.run(None, feeds)  # allocates; dropped below with the warm-up
        t0 = time.perf_counter()
        warm = 1
        while time.perf_counter() - t0 < settings.warmup_s or warm < 3:
            session.run(None, feeds)
            warm += 1
        per_run = (time.perf_counter() - t0) / (warm - 1)
        runs = int(min(max(budget_s / max(per_run, 1e-6), settings.min_repeats), max_runs))
        for _ in range(runs):
            session.run(None, feeds)
        trace = session.end_profiling()
        with open(trace, encoding="utf-8") as f:
            events = json.load(f)
    durations: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") \
                and e.get("args", {}).get("op_name") not in ISOLATION_OPS:
            durations.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"] * 1e-3)
    return warm, durations


def time_kernels(model, settings: OrtSettings, feeds: dict | None = None, budget_s: float = 0.3) -> Timing:
    """A kernel's own time: the model run alone with onnxruntime's profiler on, summing the
    kernel times of its nodes per run, without the session's per-run overhead and without
    the layout reorders that exist only because the kernel runs alone."""
    warm, durations = _profiled(model, settings, feeds, budget_s, 400)
    if not durations:
        return Timing(0.0, 0.0, 0.0, settings.min_repeats)
    per_node = [d[warm:] for d in durations.values()]
    n = min(len(d) for d in per_node)
    return Timing.of([sum(d[i] for d in per_node) * 1e-3 for i in range(n)])


def time_nodes(model, settings: OrtSettings, budget_s: float = 2.0) -> dict[str, float]:
    """Each node's kernel time inside the whole model (median over runs, ms), by the name
    onnxruntime gives it; a node it rewrote into its NCHWc layout is named after its output
    with `_nchwc` appended. What a kernel costs in place, where the kernels before it have
    pushed its weights out of the caches, unlike a kernel run alone."""
    warm, durations = _profiled(model, settings, None, budget_s, 200)
    return {name: statistics.median(d[warm:] or d) for name, d in durations.items()}


class OrtRuntime:
    """This machine's CPU through onnxruntime: what the `cpu` target measures with."""

    def __init__(self, target, settings: OrtSettings):
        self.target, self.settings = target, settings

    def identity(self) -> dict:
        from .processor import onnxruntime_version, this_processor
        proc = this_processor()
        return {"target": self.target.name, "runtime": f"onnxruntime {onnxruntime_version()}",
                "processor": proc.name, "isa": sorted(proc.isa), "threads": self.settings.threads}

    def how(self) -> dict:
        return self.settings.how()

    def kernel(self, block) -> Timing:
        return time_kernels(block.to_model(), self.settings, block.feeds())

    def nodes(self, graph) -> dict[str, float]:
        """{node name: ms} of every kernel inside the whole model (time_nodes)."""
        return time_nodes(graph, self.settings)

    def models(self, graphs: list) -> list[Timing]:
        """End to end, interleaved in one run."""
        return time_sessions([self.settings.session(g) for g in graphs], self.settings)

    def overhead_ms(self) -> float:
        """What one session.run of an empty graph costs: paid once per model end to end."""
        from onnx import TensorProto, helper
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return round(time_model(model, self.settings).median_ms, 5)
