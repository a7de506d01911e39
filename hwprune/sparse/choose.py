"""Per layer, which form to give a linear layer at a latency budget: dense at a narrower width,
block-sparse (BSR) at a sparsity, or 2:4; from a latency model and L2 importance.

    choices = plan_layers(model, example_inputs, speedup=2.0, layers="*.intermediate.dense")
    for c in choices: print(c.layer, c.chosen.kind, c.chosen.keep, c.why)

Each layer's budget is its dense latency / speedup. Every candidate (kind, fraction of weights
kept) gets a latency from the latency model and an importance: the fraction of the layer's
squared weight norm it keeps (whole rows by norm for width, whole blocks by norm for BSR, the
2 largest of 4 for 2:4), the channel criterion of hwprune's L2 importance. Among candidates
within the budget the one keeping the most importance wins; if none fits, the fastest.

The latency model is a function (kind, tokens, in, out, keep) -> ms. The default measures on
this CPU (dense F.linear at the narrower width; the native BSR kernel at the block density;
2:4 has no CPU kernel, so it costs what dense costs), one thread, interleaved, medians, cached
per shape. A GPU model (Triton and semi-structured sweeps, or the analytic model) is not
written yet. This recommends; `sparsify` applies BSR choices, and width choices go to
`hwprune.slim`, which cuts them across the layer's coupled group.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .layers import kind_of
from .masks import two_four_mask

LatencyModel = Callable[[str, int, int, int, float], float]
KEEPS = (0.75, 0.5, 0.3, 0.2, 0.1, 0.05)


@dataclass(frozen=True)
class Candidate:
    kind: str              # "dense", "width", "bsr" or "2:4"
    keep: float            # fraction of the weights kept
    latency_ms: float
    importance_kept: float  # fraction of the layer's squared weight norm kept


@dataclass(frozen=True)
class LayerChoice:
    layer: str
    shape: tuple           # (out, in)
    tokens: int
    budget_ms: float
    chosen: Candidate
    candidates: tuple
    why: str


def _energy_kept(weight: torch.Tensor, kind: str, keep: float, block: int) -> float:
    w2 = weight.detach().float().pow(2)
    total = float(w2.sum()) or 1.0
    if kind == "dense":
        return 1.0
    if kind == "2:4":
        return float((w2 * two_four_mask(weight)).sum()) / total
    if kind == "width":
        units = w2.sum(1)
    else:
        out_f, in_f = weight.shape
        units = w2.reshape(out_f // block, block, in_f // block, block).sum((1, 3)).flatten()
    k = max(1, round(keep * units.numel()))
    return float(units.topk(k).values.sum()) / total


def _tokens(model: nn.Module, example_inputs: tuple, names: list) -> dict:
    """Rows each layer multiplies on the example inputs (tokens x batch, or pixels x batch)."""
    seen, hooks = {}, []
    for name in names:
        module = model.get_submodule(name)
        per = module.in_features if isinstance(module, nn.Linear) else module.in_channels

        def hook(_m, args, _out, name=name, per=per):
            seen[name] = args[0].numel() // per
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def measured_cpu_latency(block: int = 32, rounds: int = 5) -> LatencyModel:
    """Latency on this CPU, one thread, interleaved against dense, medians; cached per shape."""
    import statistics
    import time

    import torch.nn.functional as F

    from . import native
    from .bsr import to_bsr

    cache: dict = {}

    def median_ms(fn) -> float:
        fn()
        samples = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        return statistics.median(samples) * 1e3

    def latency(kind: str, tokens: int, in_f: int, out_f: int, keep: float) -> float:
        key = (kind, tokens, in_f, out_f, keep)
        if key not in cache:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                x = torch.randn(tokens, in_f)
                if kind == "bsr" and native.status().loaded:
                    g = torch.Generator().manual_seed(0)
                    grid = torch.rand(out_f // block, in_f // block, generator=g) < keep
                    w = torch.randn(out_f, in_f) * grid.repeat_interleave(block, 0).repeat_interleave(block, 1)
                    crow, col, values = to_bsr(w, block)
                    cache[key] = median_ms(lambda: torch.ops.hwprune.bsr_linear(x, crow, col, values, None, out_f))
                else:  # width: a narrower dense layer; 2:4 and dense: the full dense layer
                    rows = max(1, round(out_f * keep)) if kind == "width" else out_f
                    w = torch.randn(rows, in_f)
                    cache[key] = median_ms(lambda: F.linear(x, w))
            finally:
                torch.set_num_threads(threads)
        return cache[key]
    return latency


def _candidates(weight, tokens: int, block: int, keeps, latency: LatencyModel) -> list:
    out_f, in_f = weight.shape
    forms = [("dense", 1.0), *(("width", k) for k in keeps)]
    if out_f % block == 0 and in_f % block == 0:
        forms += [("bsr", k) for k in keeps]
    if in_f % 4 == 0:
        forms.append(("2:4", 0.5))
    return [Candidate(kind, keep, latency(kind, tokens, in_f, out_f, keep), _energy_kept(weight, kind, keep, block))
            for kind, keep in forms]


def _choose(candidates: list, budget: float) -> tuple:
    fits = [c for c in candidates if c.latency_ms <= budget]
    if not fits:
        best = min(candidates, key=lambda c: c.latency_ms)
        return best, (f"no form meets the budget {budget:.3f} ms; the fastest is {best.kind} keeping {best.keep:.0%} "
                      f"({best.latency_ms:.3f} ms, {best.importance_kept:.1%} of the weight energy)")
    best = max(fits, key=lambda c: (c.importance_kept, -c.latency_ms))
    others = sorted((c for c in fits if c is not best), key=lambda c: -c.importance_kept)
    runner = (f"; next best within budget: {others[0].kind} keeping {others[0].keep:.0%} "
              f"({others[0].importance_kept:.1%})") if others else ""
    return best, (f"{best.kind} keeping {best.keep:.0%}: {best.importance_kept:.1%} of the weight energy at "
                  f"{best.latency_ms:.3f} ms <= budget {budget:.3f} ms{runner}")


def plan_layers(model: nn.Module, example_inputs, *, speedup: float, layers: str = "*", block: int = 32,
                keeps=KEEPS, latency: LatencyModel | None = None) -> list:
    """A LayerChoice for every nn.Linear / 1x1 conv matching `layers` (comma-separated globs)."""
    from ..errors import InputError

    if not speedup > 1.0:
        raise InputError(f"speedup {speedup}: give a per-layer latency speedup above 1 (for example 2)")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    globs = [g.strip() for g in layers.split(",") if g.strip()]
    names = [n for n, m in model.named_modules() if kind_of(m) is not None and kind_of(m).why_not(m) is None
             and any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not names:
        raise InputError(f"layers {layers!r} match no linear or 1x1 conv layer of the model: give globs over "
                         "module names")
    latency = latency or measured_cpu_latency(block)
    tokens = _tokens(model.eval(), inputs, names)
    choices = []
    for name in names:
        module = model.get_submodule(name)
        weight = kind_of(module).weight(module)
        candidates = _candidates(weight, tokens[name], block, keeps, latency)
        budget = candidates[0].latency_ms / speedup  # candidates[0] is the dense layer
        chosen, why = _choose(candidates, budget)
        choices.append(LayerChoice(name, tuple(weight.shape), tokens[name], budget, chosen, tuple(candidates), why))
    return choices
