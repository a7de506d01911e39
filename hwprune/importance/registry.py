"""The criteria registry: each criterion is one function plus one row (`@criterion(...)`),
saying what it reads and whether its figures share a unit across groups; and the
accumulation over a group's parameter slots that the weight criteria share."""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


class Needs(enum.Enum):
    WEIGHTS = "the weights"
    INPUTS = "calibration inputs"
    LOSS = "a loss on calibration inputs"


@dataclass(frozen=True)
class Criterion:
    name: str
    fn: Callable  # fn(ScoreContext) -> [one array per group]
    needs: Needs
    across_groups: bool  # figures in one unit for every group (a head and a neuron compare directly)
    summary: str

    @property
    def reads_inputs(self) -> bool:
        """Measured on calibration inputs (with or without a loss), not on the weights alone."""
        return self.needs is not Needs.WEIGHTS


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may read. model/calibration for Needs.INPUTS and LOSS; removed: a
    bool per channel label, the channels already cut (measure the model with them masked);
    compensation: (folds, means) of hwprune.compensate (fisher reads it); loss_fn(model,
    batch) -> scalar and teacher: hwprune.importance.loss."""
    graph: object
    tensors: dict
    seed: int = 0
    model: object = None
    calibration: list | None = None
    progress: Callable | None = None
    removed: np.ndarray | None = None
    compensation: tuple | None = None
    loss_fn: Callable | None = None
    teacher: object = None

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


CRITERIA: dict = {}


def criterion(name: str, needs: Needs = Needs.WEIGHTS, across_groups: bool = False, summary: str = ""):
    """Register fn(ScoreContext) as the criterion `name`: what it reads (`needs`), whether its
    figures share one unit across groups, and its one-line summary (the CLI's help)."""
    def register(fn):
        if name in CRITERIA:
            raise ValueError(f"two criteria named {name}")
        CRITERIA[name] = Criterion(name, fn, needs, across_groups, summary or (fn.__doc__ or "").split("\n")[0])
        return fn
    return register


def criterion_names(*needs: Needs) -> tuple:
    """The registered criteria in registration order; with `needs`, those that read one of them.
    Read from the registry at each call, so a criterion registered later is in it."""
    return tuple(n for n, c in CRITERIA.items() if not needs or c.needs in needs)


def data_criteria() -> tuple:
    """The criteria measured on calibration inputs (hwprune.slim's calibration is for them)."""
    return criterion_names(Needs.INPUTS, Needs.LOSS)


CHUNK_ELEMENTS = 1 << 24  # 64 MB of float32 at a time: a bf16 embedding of 1 GB never becomes 4 GB


def per_index(t: torch.Tensor, power: int | None, dims: tuple) -> dict:
    """{dim: the sum of |t|^power (of t itself with power None) over every other dim} for each
    dim of `dims`, in float32, powering a slab of at most CHUNK_ELEMENTS along the first dim at a
    time: a float copy of the whole weight would otherwise be made at once (float() of a
    float32 tensor is the tensor itself, so only pow makes one)."""
    t = t.detach()
    rows = max(1, CHUNK_ELEMENTS // max(1, t[0].numel()))
    parts = {d: [] for d in dims}
    for start in range(0, t.shape[0], rows):
        x = t[start:start + rows].float()
        x = x if power is None else x.abs() if power == 1 else x.pow(2)
        for d in dims:
            other = [k for k in range(x.dim()) if k != d]
            parts[d].append(x.sum(other) if other else x)
    return {d: (torch.cat(p) if d == 0 else torch.stack(p).sum(0)).cpu().numpy().astype(np.float64)
            for d, p in parts.items()}


def accumulate(graph, tensors: dict, slots, power: int | None) -> list:
    """Per group, per channel: the sum over the given parameter slots of |w|^power (of w
    itself with power None). Slots whose tensor is not in `tensors` are skipped."""
    pos = np.full(int(graph.labels.max()) + 1, -1)
    grp = np.full_like(pos, -1)
    for g in graph.groups:
        pos[g.labels] = np.arange(g.width)
        grp[g.labels] = g.id
    scores = [np.zeros(g.width) for g in graph.groups]
    wanted: dict = {}  # fqn: [(tid, dim)], each tensor read once for all its dims
    for tid, d, fqn in slots:
        if fqn in tensors and (grp[graph.dim_labels(tid, d)] >= 0).any():
            wanted.setdefault(fqn, []).append((tid, d))
    for fqn, dims in wanted.items():
        sums = per_index(tensors[fqn], power, tuple(dict.fromkeys(d for _, d in dims)))
        for tid, d in dims:
            lab = graph.dim_labels(tid, d)
            ok = grp[lab] >= 0
            v = sums[d]
            for gid in np.unique(grp[lab][ok]):
                sel = ok & (grp[lab] == gid)
                np.add.at(scores[gid], pos[lab][sel], v[sel])
    return scores


@dataclass(frozen=True, eq=False)
class Scores(Sequence):
    """The score stage's record: one array per group, in the groups' order (read as a sequence
    of them). across_groups: the figures are in one unit for every group (a head and a neuron
    compare directly), not only within a group."""
    per_group: tuple
    across_groups: bool = False

    def __getitem__(self, i):
        return self.per_group[i]

    def __len__(self) -> int:
        return len(self.per_group)
