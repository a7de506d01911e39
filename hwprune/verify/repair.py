"""Cut, verify, and repair: where a cut fails the oracle, find the groups it failed on,
freeze them, and cut again.

A size written into a model's forward (a literal 64 in a reshape, a `view(b, 8, -1)`) does
not follow a cut of the channels it counts. Where it raises, the traceback names the line,
and the cut groups whose tensors pass through that line's ops are the ones to freeze. Where
the output is silently wrong instead, bisecting the cut groups finds one whose cut alone
breaks equivalence.
"""
from __future__ import annotations

import traceback

import numpy as np
import torch

from ..errors import VerificationError
from ..graph.groups import ChannelGraph
from ..graph.heads import head_changes
from ..graph.masked import tensors_of
from ..graph.trace import GRAPH, short_path, stack_frames
from ..progress import tick
from ..report import slim_report
from ..surgery import cut
from ..surgery.owned_sizes import owned_sizes
from . import verify, verify_fidelity


def cut_verified(a, removed: np.ndarray, config, progress=None, attempts: int = 8):
    """(slim model, report): cut `removed` (a bool per channel label) from the analysis `a`
    and verify. Where a size written into forward does not follow a cut, freeze the groups
    involved (in `a`, and clear them in `removed`) and cut again: by the line that raised, or,
    when the output is silently wrong, by bisecting the cut groups for one whose cut alone
    breaks equivalence. Under config.strict the first failure is raised."""
    for _ in range(attempts):
        try:
            return cut_and_verify(a, removed, config, progress)
        except VerificationError as e:
            if config.strict:
                raise
            blamed = groups_at(a.graph, e.__cause__, removed) or bisect_groups(a, removed, config)
            if not blamed:
                raise
            for g, where in blamed:
                g.frozen = f"a size in forward at {where} does not follow a cut of this group ({first_line(e)})"
                removed[g.labels] = False
    raise VerificationError(f"the slim model still fails after freezing groups {attempts} times")


def first_line(e: BaseException) -> str:
    """The first line of what caused e (or of e), at most 160 characters: for a frozen group's reason."""
    cause = e.__cause__ or e
    return str(cause).splitlines()[0][:160]


def bisect_groups(a, removed: np.ndarray, config) -> list:
    """[(group, 'unknown line')] for one cut group that alone breaks equivalence, or []."""
    def fails(groups) -> bool:
        trial = np.zeros_like(removed)
        for g in groups:
            trial[g.labels] = removed[g.labels]
        try:
            cut_and_verify(a, trial, config, None)
            return False
        except VerificationError:
            return True
    suspects = [g for g in a.groups if g.frozen is None and removed[g.labels].any()]
    while len(suspects) > 1:
        half = suspects[: len(suspects) // 2]
        suspects = half if fails(half) else suspects[len(suspects) // 2:]
    if suspects and fails(suspects):
        return [(suspects[0], "an unknown line (found by bisection: the output changed)")]
    return []


def groups_at(graph: ChannelGraph, error, removed: np.ndarray) -> list:
    """(group, 'file:line') for the cut groups whose tensors pass through the line that raised."""
    if error is None:
        return []
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in f.filename or "/torch/nn/modules/" in f.filename]
    for filename, lineno in reversed(frames):
        nodes = [n for n in graph.traced.graph.nodes if n.op == "call_function"
                 and any(f == filename and int(ln) == lineno for f, ln, _ in stack_frames(n))]
        labels = set()
        for n in nodes:
            for t in [a.name for a in n.all_input_nodes] + [n.name]:
                for d in range(len(graph.shapes.get(t, ()))):
                    seg = graph.dim_labels(t, d)
                    labels.update(seg[removed[seg]].tolist())
        hit = [g for g in graph.groups if g.frozen is None and labels.intersection(g.labels.tolist())]
        if hit:
            return [(g, f"{short_path(filename)}:{lineno}") for g in hit]
    return []


def module_calls(graph: ChannelGraph, removed: np.ndarray) -> dict:
    """{module path: (old, new) shape of the first tensor input of its first call}. Tensors made
    from the model's own weights alone are not inputs: a weight-standardized conv's first call
    reshapes its weight, and the conv's input is what its F.conv2d reads besides that weight."""
    calls = {}
    owner = {n: fqn.rpartition(".")[0] for n, (k, fqn) in graph.traced.placeholders.items() if k in ("param", "buffer")}
    static = set(owner)
    for node in graph.traced.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function":
            continue
        if all(a.name in static for a in node.all_input_nodes):
            static.add(node.name)
            continue
        # the innermost module on the stack; without one (fallback tracer), the module whose own tensor it reads
        path = list(stack.values())[-1][0] if stack else next(
            (owner[a.name] for a in node.all_input_nodes if a.name in owner), None)
        if path is None:
            continue
        first = next((a for a in node.args if isinstance(a, torch.fx.Node) and a.name in graph.shapes
                      and a.name not in static), None)
        if path not in calls and first is not None:
            calls[path] = (graph.shapes[first.name], graph.new_shape(first.name, removed))
    return calls


def cut_and_verify(a, removed: np.ndarray, config, progress=None):
    """(slim model, report) for one cut, or VerificationError: the surgery, the compensation's
    folds where config.compensate, then the oracle (mask equivalence; output fidelity under
    config.prune_hidden, since norms over cut channels normalize over fewer)."""
    graph = a.graph
    tick(progress, "cut", 0, 1)
    kept = graph.param_kept(removed)
    shapes = (graph.shapes.__getitem__, lambda t: graph.new_shape(t, removed)) if a.trace == GRAPH else None
    heads = head_changes(graph, removed) if shapes is None else None
    # sizes kept as module attributes follow the cut only where mask equivalence will check them:
    # output fidelity (prune_hidden) passes any model that runs
    sizes = owned_sizes(graph, removed) if shapes is None and not config.prune_hidden else None
    slim_model = cut(a.model, kept, module_calls(graph, removed), shapes, heads, sizes)
    if shapes is None:
        slim_model.eval()
    fills, folded = {}, 0
    if config.compensate:
        from ..compensate import bias_deltas, compensation_of, fills_for, fold_biases
        folds, means = compensation_of(a)
        fills = fills_for(graph, folds, means, removed)
        folded = fold_biases(slim_model, bias_deltas(folds, fills, tensors_of(a.model)), kept)
    tick(progress, "verify", 0, 1)
    if config.prune_hidden:  # norms over cut channels: not mask-equivalent by design
        result = verify_fidelity(a.model, slim_model, a.example_inputs, config.verify_batches)
    else:
        result = verify(graph, a.model, slim_model, a.example_inputs, removed, config.rtol, config.verify_batches,
                        fills)
    compensated = {"layers": folded, "reads": int(sum(int((f != 0).sum()) for _, f in fills.values()))}
    return slim_model, slim_report(a, slim_model, removed, config, result, kept, compensated)
