"""Coupled channel groups: run every op's rule, join coupled elements, bucket the components.

Every dim of every tensor in the graph is a run of element ids. A rule's links join element
ids; the connected components are channels that must go together. Components that touch a
parameter and are not positions are prunable channels; channels that touch the same set of
parameter dims form one `ChannelGroup` (a layer's filters, a residual stream, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .rules import DECLARED, Coupling, Freeze, Link, OpCall, load_all
from .trace import GRAPH, TracedGraph, short_path, stack_frames



def source_line(node) -> str:
    """The innermost frame of the node's stack trace outside torch itself: 'file.py:12 (fn)'."""
    frames = stack_frames(node)
    if not frames:
        return f"node {node.name}"
    outside = [f for f in frames if "/torch/" not in f[0] or "/torch/export" in f[0]] or frames
    path, line, fn = outside[-1]
    return f"{short_path(path)}:{line} ({fn})"


@dataclass
class ChannelGroup:
    """Channels that must be cut together. labels[k] is the component of channel k."""
    id: int
    labels: np.ndarray
    members: tuple
    frozen: str | None

    @property
    def width(self) -> int:
        return len(self.labels)


@dataclass
class ChannelGraph:
    traced: TracedGraph
    shapes: dict
    base: dict
    labels: np.ndarray
    groups: list
    param_slots: list  # (tensor id, dim, state-dict name)
    where: dict = field(default_factory=dict)

    def dim_labels(self, tid, dim: int) -> np.ndarray:
        """The component of each index of a tensor's dim."""
        start = self.base[(tid, dim)]
        return self.labels[start: start + self.shapes[tid][dim]]

    def kept(self, tid, dim: int, removed: np.ndarray) -> np.ndarray:
        return np.nonzero(~removed[self.dim_labels(tid, dim)])[0]

    def new_shape(self, tid, removed: np.ndarray) -> tuple:
        return tuple(len(self.kept(tid, d, removed)) for d in range(len(self.shapes[tid])))

    def param_kept(self, removed: np.ndarray) -> dict:
        """{state-dict name: {dim: kept indices}} for every parameter or buffer that is cut."""
        out = {}
        for tid, d, fqn in self.param_slots:
            idx = self.kept(tid, d, removed)
            if len(idx) < self.shapes[tid][d]:
                out.setdefault(fqn, {})[d] = idx
        return out

    def removed_of(self, cuts: dict) -> np.ndarray:
        """Component mask from {group id: removed channel positions}."""
        removed = np.zeros(int(self.labels.max()) + 1 if self.labels.size else 0, dtype=bool)
        for gid, pos in cuts.items():
            removed[self.groups[gid].labels[np.asarray(pos, dtype=int)]] = True
        return removed


def _tensors(tg: TracedGraph):
    shapes = {}
    for n in tg.graph.nodes:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):
            shapes[n.name] = tuple(int(s) for s in val.shape)
        elif isinstance(val, (list, tuple)) and val and all(isinstance(v, torch.Tensor) for v in val):
            for k, v in enumerate(val):
                shapes[f"{n.name}#{k}"] = tuple(int(s) for s in v.shape)
    return shapes


def _apply_rules(tg, shapes, extra_rules) -> tuple:
    rules = {**load_all(), **DECLARED, **dict(extra_rules)}
    tid = lambda a: a.name if isinstance(a, torch.fx.Node) and a.name in shapes else None  # noqa: E731
    links, freezes, where = [], [], {}
    outputs_of: dict = {}
    for t in shapes:
        outputs_of.setdefault(t.split("#")[0], []).append(t)
    for node in tg.graph.nodes:
        if node.op != "call_function":
            continue
        where[node.name] = source_line(node)
        op = OpCall(node, shapes.__getitem__, tid, where[node.name])
        touched = op.tensor_inputs() + outputs_of.get(node.name, [])
        fn = rules.get(node.target)
        name = getattr(node.target, "__name__", str(node.target))
        inside = _custom_function(node, tg.functions, extra_rules)
        if inside:
            why = (f"{name} at {where[node.name]} runs inside custom autograd Function {inside[0]} "
                   f"({short_path(inside[1])}:{inside[2]}), whose backward may assume these sizes; declare it "
                   "with hwprune.declare_rule or --rule to cut through it")
            c = Coupling(freezes=tuple(Freeze((t, d), why) for t in touched for d in range(len(shapes[t]))))
        elif fn is None:
            why = (f"{name} at {where[node.name]} has no channel rule; its channels are frozen "
                   "(declare one with hwprune.declare_rule or --rule if it is elementwise)")
            c = Coupling(freezes=tuple(Freeze((t, d), why) for t in touched for d in range(len(shapes[t]))))
        else:
            try:
                c = fn(op)
            except Exception as e:  # a rule that cannot read this call freezes it, with the reason
                why = f"rule {fn.__name__} could not read {name} at {where[node.name]}: {e}"
                c = Coupling(freezes=tuple(Freeze((t, d), why) for t in touched for d in range(len(shapes[t]))))
        covered = {l.a for l in c.links} | {l.b for l in c.links} | {f.slot for f in c.freezes} | set(c.free)
        gaps = [Freeze((t, d), f"{name} at {where[node.name]}: its rule does not map dim {d}")
                for t in touched for d in range(len(shapes[t])) if (t, d) not in covered]
        links += c.links
        freezes += list(c.freezes) + gaps
    return links, freezes, where


def _custom_function(node, functions, extra_rules):
    """The custom autograd Function whose forward this node was traced in, unless declared."""
    declared = {k for k in [*DECLARED, *dict(extra_rules)] if isinstance(k, str)}
    frames = stack_frames(node)
    for fn in functions:
        if fn[0] in declared:
            continue
        if any(f == fn[1] and fn[2] <= int(line) <= fn[3] for f, line, _ in frames):
            return fn
    return None


MODEL_INPUT, MODEL_OUTPUT = "model input", "model output"
BOUNDARY_REASONS = (MODEL_INPUT, MODEL_OUTPUT)


def _boundary_freezes(tg, shapes, model, has_cutter, data_buffers) -> list:
    from .heads import head_modules
    out = []
    attention = head_modules(tg) if tg.tracer != GRAPH else set()  # their tensors: surgery.attention
    for name, (kind, what) in tg.placeholders.items():
        if kind == "input" and name in shapes:
            out += [Freeze((name, d), MODEL_INPUT) for d in range(len(shapes[name]))]
        if kind in ("param", "buffer") and name in shapes and tg.tracer != GRAPH:
            owner = what.rpartition(".")[0]
            module = model.get_submodule(owner) if owner else model
            if kind == "buffer" and what.rpartition(".")[2] in data_buffers(module):
                why = f"{what} is data of {type(module).__name__} ({owner}), not channels (its cutter says so)"
                out += [Freeze((name, d), why) for d in range(len(shapes[name]))]
            elif owner in attention and kind == "buffer":
                # an attention module's parameters are cut per head (surgery.attention); its buffers
                # are data, such as Swin v2's coordinate table that feeds its bias MLP as an input
                why = f"{what} is a buffer of the attention {type(module).__name__} ({owner}): data, not channels"
                out += [Freeze((name, d), why) for d in range(len(shapes[name]))]
            elif not has_cutter(module) and owner not in attention:
                why = (f"{what} belongs to {type(module).__name__} ({owner or 'the root module'}), "
                       "which has no cutter; register one with hwprune.surgery.register_cutter")
                out += [Freeze((name, d), why) for d in range(len(shapes[name]))]
    for name in tg.outputs:
        if name in shapes:
            out += [Freeze((name, d), MODEL_OUTPUT) for d in range(len(shapes[name]))]
    return out


def _same_tensor_links(tg, shapes, model) -> tuple:
    """Graph nodes that read the same tensor (a module called twice under the fallback tracer,
    weights tied under two names such as T5's shared and embed_tokens) are one tensor: join
    them dim by dim. A tensor that forward never reads, and that is not one of those, is frozen:
    nothing in the graph says what its channels are."""
    identity = {}
    if tg.tracer != GRAPH:
        for fqn, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
            identity[fqn] = id(t)
    first, links, nodes = {}, [], []
    for name, (kind, fqn) in tg.placeholders.items():
        if kind in ("param", "buffer") and name in shapes:
            key = identity.get(fqn, fqn)
            if key in first and shapes[first[key]] == shapes[name]:
                links += [Link((first[key], d), (name, d)) for d in range(len(shapes[name]))]
            first.setdefault(key, name)
            nodes.append((name, key, fqn))
    used = {n.name for n in tg.graph.nodes if n.users}
    read = {key for name, key, _ in nodes if name in used}
    freezes = [Freeze((name, d), f"{fqn} is not read by forward for these inputs")
               for name, key, fqn in nodes if key not in read for d in range(len(shapes[name]))]
    return links, freezes


def _components(shapes, links) -> tuple:
    base, total = {}, 0
    for t, shp in shapes.items():
        for d, n in enumerate(shp):
            base[(t, d)] = total
            total += n
    ga, gb = [], []
    for l in links:
        na, nb = shapes[l.a[0]][l.a[1]], shapes[l.b[0]][l.b[1]]
        ia = np.arange(na) if l.ia is None else np.asarray(l.ia)
        ib = np.arange(nb) if l.ib is None else np.asarray(l.ib)
        if len(ia) != len(ib) or (len(ia) and (ia.max() >= na or ib.max() >= nb)):
            raise AssertionError(f"bad link {l.a} ({na}) <-> {l.b} ({nb}): {len(ia)} vs {len(ib)} elements")
        ga.append(base[l.a] + ia)
        gb.append(base[l.b] + ib)
    a = np.concatenate(ga) if ga else np.zeros(0, dtype=np.int64)
    b = np.concatenate(gb) if gb else np.zeros(0, dtype=np.int64)
    m = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(total, total))
    _, labels = connected_components(m, directed=False)
    return base, labels


def build_channel_graph(tg: TracedGraph, model, extra_rules=(), *, has_cutter: Callable,
                        data_buffers: Callable = lambda module: ()) -> ChannelGraph:
    """The coupled channel groups of a traced model. has_cutter(module): whether surgery can fix
    that module's sizes (hwprune.surgery.has_cutter); the tensors of a module without one are
    frozen, since cutting them would leave its size attributes wrong. data_buffers(module): the
    names of its buffers that are data, not channels (hwprune.surgery.data_buffers): frozen."""
    shapes = _tensors(tg)
    links, freezes, where = _apply_rules(tg, shapes, extra_rules)
    same_links, unused = _same_tensor_links(tg, shapes, model)
    links += same_links
    freezes += unused
    freezes += _boundary_freezes(tg, shapes, model, has_cutter, data_buffers)
    base, labels = _components(shapes, links)
    ncomp = int(labels.max()) + 1 if labels.size else 0
    position = np.zeros(ncomp, dtype=bool)
    reason = np.full(ncomp, -1)
    reasons: list = []
    for f in freezes:
        n = shapes[f.slot[0]][f.slot[1]]
        lab = labels[base[f.slot] + (np.arange(n) if f.idx is None else np.asarray(f.idx))]
        if f.kind == "position":
            position[lab] = True
            continue
        fresh = lab[reason[lab] < 0]
        if fresh.size:
            reasons.append(f.reason)
            reason[fresh] = len(reasons) - 1
    param_slots = [(t, d, tg.placeholders[t][1]) for t in shapes if t in tg.placeholders
                   and tg.placeholders[t][0] in ("param", "buffer") for d in range(len(shapes[t]))]
    groups = _bucket(param_slots, shapes, base, labels, position, reason, reasons)
    return ChannelGraph(tg, shapes, base, labels, groups, param_slots, where)


def _bucket(param_slots, shapes, base, labels, position, reason, reasons) -> list:
    """Channels touching the same parameter dims (and equally frozen) form one group."""
    segs = [labels[base[(t, d)]: base[(t, d)] + shapes[t][d]] for t, d, _ in param_slots]
    # unique (label, slot) pairs sorted by label then slot, as one int64 key: a sort and a
    # neighbour compare (np.unique, with axis=0 or its hash table, is 10-40x slower here)
    n_slots = len(param_slots)
    keys = np.sort(np.concatenate([np.zeros(0, dtype=np.int64)] + [
        seg[~position[seg]].astype(np.int64) * n_slots + i for i, seg in enumerate(segs)]))
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys
    groups = []
    for labs, slots, rid in _same_slots(keys // n_slots, keys % n_slots, reason):
        if len(labs) < 2:
            continue
        t, d, _ = param_slots[slots[0]]
        pos = _first_index(segs[slots[0]], labs)  # every label of the group is in its first slot
        members = tuple(dict.fromkeys(f"{param_slots[s][2]}:{param_slots[s][1]}" for s in slots))
        groups.append((int(pos.min()) + base[(t, d)], labs[np.argsort(pos)], members, rid))
    groups.sort(key=lambda g: g[0])
    return [ChannelGroup(i, labs, members, reasons[rid] if rid >= 0 else None)
            for i, (_, labs, members, rid) in enumerate(groups)]


def _same_slots(pair_lab: np.ndarray, pair_slot: np.ndarray, reason: np.ndarray):
    """(labels, slot tuple, reason id) for each set of labels that touch exactly the same slots
    and are frozen for the same reason. The pairs are sorted by label, then slot."""
    starts = np.flatnonzero(np.concatenate([[True], pair_lab[1:] != pair_lab[:-1]]))
    counts = np.diff(np.append(starts, len(pair_lab)))
    for k in np.flatnonzero(np.bincount(counts)):  # labels touching k slots are compared as k-rows
        rows = starts[counts == k]
        lab = pair_lab[rows]
        key = np.column_stack([reason[lab], pair_slot[rows[:, None] + np.arange(k)]])
        order = np.lexsort(key.T[::-1])
        key, lab = key[order], lab[order]
        bounds = np.flatnonzero(np.concatenate([[True], (key[1:] != key[:-1]).any(1)]))
        for a, b in zip(bounds.tolist(), np.append(bounds[1:], len(lab)).tolist()):
            yield lab[a:b], tuple(key[a, 1:].tolist()), int(key[a, 0])


def _first_index(seg: np.ndarray, labs: np.ndarray) -> np.ndarray:
    """For each label, the first position in seg that holds it."""
    order = np.argsort(seg, kind="stable")
    ordered = seg[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    return order[first][np.searchsorted(ordered[first], labs)]
