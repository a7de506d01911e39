"""Training-time sparsity penalties over hwprune's own channel groups, to add to a loss:

    penalty = hwprune.GroupLasso(hwprune.analyze(model, example_inputs), lam=1e-4)
    model.train()                                  # analyze leaves the model in eval mode
    loss = task_loss + penalty(model)              # differentiable; then slim(..., importance="l2")

GroupLasso: lam * sum over prunable groups, sum over their channels c, of ||W_c||_2, where W_c
is every parameter element channel c owns in every member of its group: exactly the set the
cut removes together (a filter with its BN scale and shift and each consumer's input slice;
for a residual-coupled group every conv and norm on the stream; for a head group the head's
q, k and v rows and its output-projection columns). The L2 norm of a whole set is the group
lasso of Yuan and Lin (2006): its gradient w_c / ||W_c|| has the same length for every channel,
so it drives whole channels to zero, not single weights. The next slim with importance="l2"
(the same sum of squares over the same sets, with the BN running statistics) reads them as
the least important.

BNL1: lam * sum |gamma| over every BatchNorm scale (Liu et al., "Learning Efficient
Convolutional Networks through Network Slimming", 2017); importance="bn" reads them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InputError


def _strength(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise InputError(f"penalty strength {lam!r}: give a finite number >= 0, for example 1e-4")
    return float(lam)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module under DistributedDataParallel / DataParallel (their parameter names gain
    'module.') and under torch.compile (it adds '_orig_mod.')."""
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    model = model.module if isinstance(model, parallel) else model
    return getattr(model, "_orig_mod", model)


@dataclass(frozen=True)
class _Slice:
    """The elements of parameter `fqn` along `dim` at `index` belong to channels `channel`
    (positions in the penalty's flat list of channels)."""
    fqn: str
    dim: int
    index: torch.Tensor
    channel: torch.Tensor


class GroupLasso:
    """lam * sum over channels of the L2 norm of every parameter slice the channel owns across
    its coupled group, for every prunable group of `analysis` (hwprune.analyze(model, inputs)).
    Call it on the analysed model, or a copy or DDP wrapper of it with the same parameter names."""

    def __init__(self, analysis, lam: float):
        self.lam = _strength(lam)
        graph = analysis.graph
        self.groups = [g for g in analysis.groups if g.frozen is None]
        if not self.groups:
            raise InputError(f"{type(analysis.model).__name__} has no prunable channel group, so group lasso "
                             "has nothing to penalize: run `hwprune analyze --explain` to see why")
        where = np.full(int(graph.labels.max()) + 1, -1)
        start = 0
        for g in self.groups:
            where[g.labels] = start + np.arange(g.width)
            start += g.width
        self.channels = start
        params = {n for n, _ in analysis.model.named_parameters(remove_duplicate=False)}
        self.slices = []  # parameters only: BN running statistics are not trained
        for tid, d, fqn in graph.param_slots:
            if fqn not in params:
                continue
            channel = where[graph.dim_labels(tid, d)]
            idx = np.flatnonzero(channel >= 0)
            if idx.size:
                self.slices.append(_Slice(fqn, d, torch.from_numpy(idx), torch.from_numpy(channel[idx])))

    def norms(self, model: nn.Module) -> list:
        """Per prunable group (self.groups), the L2 norm of each channel's parameters."""
        flat = self._flat_norms(model)
        return list(flat.split([g.width for g in self.groups]))

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return self.lam * self._flat_norms(model).sum()

    def _flat_norms(self, model: nn.Module) -> torch.Tensor:
        named = dict(_unwrapped(model).named_parameters(remove_duplicate=False))
        missing = sorted({s.fqn for s in self.slices} - set(named))
        if missing:
            raise InputError(f"the model has no parameter {missing[0]} (of {len(missing)} the penalty was built "
                             "for): build GroupLasso from the analysis of the model you train")
        some = named[self.slices[0].fqn]
        dtype = torch.float64 if some.dtype == torch.float64 else torch.float32  # fp16/bf16 weights sum in fp32
        total = torch.zeros(self.channels, dtype=dtype, device=some.device)
        squared = {}
        for s in self.slices:
            w = named[s.fqn]
            if s.fqn not in squared:
                squared[s.fqn] = w.to(dtype).pow(2)
            sq = squared[s.fqn]
            per_index = sq.sum([k for k in range(sq.dim()) if k != s.dim]) if sq.dim() > 1 else sq
            total = total.index_add(0, s.channel.to(w.device), per_index[s.index.to(w.device)])
        # sqrt with gradient 0 at 0 (a subgradient): a channel already at zero stays put
        return torch.where(total > 0, total.clamp_min(1e-30).sqrt(), torch.zeros_like(total))

    def __repr__(self) -> str:
        return f"GroupLasso(lam={self.lam:g}, groups={len(self.groups)}, channels={self.channels})"


class BNL1:
    """lam * sum |gamma| over the scales of every BatchNorm layer of the model it is called on."""

    def __init__(self, lam: float):
        self.lam = _strength(lam)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        gammas = [m.weight for m in _unwrapped(model).modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
        if not gammas:
            raise InputError(f"{type(_unwrapped(model)).__name__} has no BatchNorm layer with a scale, so BN-L1 has "
                             "nothing to penalize: use GroupLasso")
        return self.lam * sum(g.float().abs().sum() for g in gammas)

    def __repr__(self) -> str:
        return f"BNL1(lam={self.lam:g})"
