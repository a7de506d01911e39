"""What a width assignment costs: latency, MACs or parameters, as a sum over the model's kernels.

Each conv or linear kernel (hwprune.hardware.blocks) is tied to the channel groups that size
its C_in and C_out: its node's name gives the module (the exporter names nodes by module
scope), the module's weight gives the parameter dims, and those dims' channels give the
groups. A dim can hold channels of several groups (a conv after a concat) and of frozen
ones; its size under new widths is the frozen part plus each group's share.

A kernel that is not a conv or linear (pooling, an add, an activation) costs what it cost
at full width times the kept fraction of the kernel before it in the graph, which is almost
always the one producing its input. The planner only compares widths with this; the final
figures come from the slim model itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..hardware.blocks import Block, Channels, channels


@dataclass(frozen=True)
class DimSize:
    """The size of one kernel dim: `fixed` channels plus, per group, its channels in the dim."""
    fixed: int
    parts: tuple  # ((group id, channels of that group in this dim), ...)

    def size(self, widths: dict, full: dict) -> int:
        return self.fixed + sum(round(n * widths[g] / full[g]) for g, n in self.parts)

    @property
    def groups(self) -> tuple:
        return tuple(g for g, _ in self.parts)


@dataclass
class Term:
    """One kernel's cost as a function of the widths of the groups that size it."""
    name: str
    block: Block | None
    c_in: DimSize | None
    c_out: DimSize | None
    full_cost: float
    follows: int | None = None  # for a kernel without channels: the term it scales with
    memo: dict = field(default_factory=dict)
    channels: Channels | None = None  # the block's at full width, read once: term() runs millions of times

    @property
    def groups(self) -> tuple:
        return tuple(dict.fromkeys((self.c_in.groups if self.c_in else ()) + (self.c_out.groups if self.c_out else ())))


class CostModel:
    """total(widths) = sum of term costs; `kernel_cost(block, c_in, c_out)` prices a kernel."""

    def __init__(self, terms: list, full: dict, kernel_cost, unit: str):
        self.terms, self.full, self.kernel_cost, self.unit = terms, full, kernel_cost, unit
        self.by_group: dict[int, list[int]] = {}
        for i, t in enumerate(terms):
            for g in t.groups:
                self.by_group.setdefault(g, []).append(i)
        for i, t in enumerate(terms):  # a channel-less kernel moves with the one it follows
            if t.follows is not None:
                for g in terms[t.follows].groups:
                    self.by_group.setdefault(g, []).append(i)
        # the groups whose deltas a change of g can move: those that size a kernel g sizes
        sizing: dict[int, set] = {}
        for g, touched in self.by_group.items():
            for i in touched:
                sizing.setdefault(i, set()).add(g)
        self.neighbours = {g: set().union(*(sizing[i] for i in touched)) for g, touched in self.by_group.items()}

    def term(self, i: int, widths: dict) -> float:
        t = self.terms[i]
        if t.follows is not None:
            lead = self.terms[t.follows]
            if lead.c_out is None:
                return t.full_cost
            return t.full_cost * lead.c_out.size(widths, self.full) / max(lead.c_out.size(self.full, self.full), 1)
        if t.c_in is None and t.c_out is None:
            return t.full_cost
        ch = t.channels
        a = t.c_in.size(widths, self.full) if t.c_in else ch.c_in
        b = t.c_out.size(widths, self.full) if t.c_out else ch.c_out
        if ch.coupled:
            a = b = min(a, b)
        key = (max(a, 1), max(b, 1))
        if key not in t.memo:
            t.memo[key] = t.full_cost if key == (ch.c_in, ch.c_out) else self.kernel_cost(t.block, *key)
        return t.memo[key]

    def total(self, widths: dict) -> float:
        return sum(self.term(i, widths) for i in range(len(self.terms)))

    def delta(self, widths: dict, changes: dict) -> float:
        """total(widths | changes) - total(widths), touching only the terms the changed groups size."""
        touched = {i for g in changes for i in self.by_group.get(g, ())}
        new = {**widths, **changes}
        return sum(self.term(i, new) - self.term(i, widths) for i in touched)


def module_path(node_name: str, modules: set) -> str | None:
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1'. The exporter names a node by its
    module scope, one segment per module: the name relative to its parent ('conv1'), or the
    name with the parent's segment as prefix ('layer1.0' under 'layer1'); onnxruntime's
    fusions append segments of their own ('.../query/MatMul/MatMulAddFusion'): the deepest
    scope that is a module wins."""
    path, before, prev, found = "", "", None, None
    for seg in [s for s in node_name.split("/") if s][:-1]:
        if prev is not None and seg.startswith(prev + "."):
            path = f"{before}.{seg}" if before else seg
        else:
            before, path = path, f"{path}.{seg}" if path else seg
        prev = seg
        found = path if path in modules else found
    return found


def scoped_path(node, modules: set) -> str | None:
    """The deepest module scope the dynamo exporter recorded on the node
    (metadata "pkg.torch.onnx.name_scopes", e.g. ['', 'layers.0', 'layers.0.self_attn.q_proj',
    'linear']): its node names ('node_linear_2') carry no scope, so module_path finds nothing."""
    import ast
    raw = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    if raw is None:
        return None
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    return next((s for s in reversed(scopes) if isinstance(s, str) and s in modules), None)


def build_cost_model(analysis, blocks: list, kernel_cost, unit: str, full_cost=None) -> CostModel:
    """Tie `blocks` (the model's kernels at full width) to the analysis' groups."""
    graph = analysis.graph
    modules = {name for name, _ in analysis.model.named_modules()}
    group_of = np.full(int(graph.labels.max()) + 1 if graph.labels.size else 0, -1)
    planned = {}
    for g in graph.groups:
        if g.frozen is None:
            group_of[g.labels] = g.id
            planned[g.id] = g.width
    slots = {(fqn, d): (tid, d) for tid, d, fqn in graph.param_slots}

    def dim_size(fqn: str, dim: int) -> DimSize | None:
        if (fqn, dim) not in slots:
            return None
        tid, d = slots[(fqn, dim)]
        lab = graph.dim_labels(tid, d)
        owners = group_of[lab]
        ids, counts = np.unique(owners[owners >= 0], return_counts=True)
        return DimSize(int((owners < 0).sum()), tuple(zip(ids.tolist(), counts.tolist())))

    terms, last_kernel = [], None
    for b in blocks:
        cost = full_cost(b) if full_cost else kernel_cost(b, *full_channels(b))
        ch = channels(b)
        path = (module_path(b.nodes[0].name, modules) or scoped_path(b.nodes[0], modules)) if ch else None
        if ch is not None and path is not None:
            c_out, c_in = dim_size(f"{path}.weight", 0), dim_size(f"{path}.weight", 1)
            if ch.coupled:
                c_in = c_out
            elif c_in is not None and _groups_of(analysis, path) > 1:
                c_in = None  # grouped conv: dim 1 is per group; its C_out group carries the cut
            terms.append(Term(b.describe(), b, c_in, c_out, cost, channels=ch))
            last_kernel = len(terms) - 1
        else:
            terms.append(Term(b.describe(), b, None, None, cost, follows=last_kernel))
    return CostModel(terms, planned, kernel_cost, unit)


def full_channels(block: Block) -> tuple[int, int]:
    """(C_in, C_out) of a conv or linear kernel; (0, 0) for any other."""
    ch = channels(block)
    return (ch.c_in, ch.c_out) if ch else (0, 0)


def _groups_of(analysis, path: str) -> int:
    return int(getattr(analysis.model.get_submodule(path), "groups", 1) or 1)
