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

from ..errors import VerificationError
from ..graph.groups import ChannelGraph
from ..graph.trace import short_path, stack_frames
from ..surgery.stage import cut_model
from ..progress import tick
from . import Verified, expected_outputs, verify_cut


def cut_verified(a, removed: np.ndarray, config, progress=None, attempts: int = 8) -> Verified:
    """The cut and verify stages with their repair: cut `removed` (a bool per channel label)
    from the analysis `a` and verify. Where a size written into forward does not follow a cut,
    freeze the groups involved (in `a`; the Cut's `removed` leaves them whole) and cut again:
    by the line that raised, or, when the output is silently wrong, by bisecting the cut
    groups for one whose cut alone breaks equivalence. Under config.strict the first failure
    is raised. `removed` itself is left as it was. Under config.in_place the cut replaces the
    original's tensors, so there is one cut and no repair (cut_verified_in_place)."""
    if config.in_place:
        return cut_verified_in_place(a, removed, config, progress)
    removed = removed.copy()
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


def cut_verified_in_place(a, removed: np.ndarray, config, progress=None) -> Verified:
    """Cut a.model's own tensors and verify: the reference outputs are computed from the
    original tensors first (all the oracle keeps of the original), then each tensor is replaced
    by its slice, then the slim model is compared with them. The original is gone once cut,
    so a failure cannot be repaired by cutting again: it is raised, saying so."""
    fills = {}
    if config.compensate:
        from ..compensate import compensation_of, fills_for
        folds, means = compensation_of(a)
        fills = fills_for(a.graph, folds, means, removed)
    tick(progress, "verify: reference", 0, 1)
    expected = expected_outputs(a, removed, config, fills)
    cut = cut_model(a, removed, config, progress)
    try:
        return verify_cut(cut, config, progress, expected)
    except VerificationError as e:
        raise VerificationError(
            f"{e}. The model was cut in place (in_place), so the groups at fault cannot be frozen and the cut "
            "redone: run with in_place=False (--in-place off), which needs memory for a copy of the kept "
            "weights, to have them found and frozen") from e


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
    # the model's own lines first, innermost first: a torch module's line (Linear's F.linear) is
    # passed by every call of that module type, so it would blame every group; it is tried after
    inner = frames[::-1]
    for filename, lineno in [f for f in inner if "/torch/" not in f[0]] + [f for f in inner if "/torch/" in f[0]]:
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


def cut_and_verify(a, removed: np.ndarray, config, progress=None) -> Verified:
    """One cut (hwprune.surgery.stage.cut_model) and the oracle on it (verify_cut), or
    VerificationError."""
    return verify_cut(cut_model(a, removed, config, progress), config, progress)
