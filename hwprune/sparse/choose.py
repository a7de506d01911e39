"""Per layer, which form to give a linear layer at a latency budget: dense at a narrower width,
block-sparse (BSR) at a sparsity, or 2:4; from a latency model and L2 importance.

    choices = plan_layers(model, example_inputs, speedup=2.0, layers="*.intermediate.dense")
    for c in choices: print(c.layer, c.chosen.kind, c.chosen.keep, c.why)

Each layer's budget is its dense latency / speedup. Every candidate (kind, fraction of weights
kept) gets a latency from the latency model and an importance: the fraction of the layer's
squared weight norm it keeps (whole rows by norm for width, whole blocks by norm for BSR, the
2 largest of 4 for 2:4), the channel criterion of hwprune's L2 importance. Among candidates
within the budget the one keeping the most importance wins; if none fits, the layer stays dense.

The latency model is a function (kind, tokens, in, out, keep) -> ms (hwprune.sparse.latency:
measured on this CPU by default, measured on an attached GPU, or analytic). Width candidates
are offered to every layer, or, given `width_units`, only to the layers it names, each scored
by its channels' energy over the channel group (what hwprune's l2 importance sums). This
recommends; `sparsify(speedup=...)` (hwprune.sparse.per_layer) applies the choices.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn

from .latency import LatencyModel, measured_cpu_latency
from .layers import kind_of
from .masks import two_four_mask

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
    inputs_kept: int | None = None  # where a width cut before it narrowed its input: the inputs left


def _energy_kept(weight: torch.Tensor, kind: str, keep: float, block: int, units=None) -> float:
    """The fraction of the squared norm a form keeps: of the layer's weight, or for width with
    `units` (each output channel's energy over its group), of the group's."""
    w2 = weight.detach().float().pow(2)
    total = float(w2.sum()) or 1.0
    if kind == "dense":
        return 1.0
    if kind == "2:4":
        return float((w2 * two_four_mask(weight)).sum()) / total
    if kind == "width":
        units = w2.sum(1) if units is None else units.float()
        total = float(units.sum()) or 1.0
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


def _widths(out_f: int, keeps, multiple: int) -> list:
    """Kept fractions of the narrower dense layer: keep * out rounded to `multiple`, distinct, < out."""
    rows = {max(multiple, round(k * out_f / multiple) * multiple) for k in keeps}
    return sorted((r / out_f for r in rows if r < out_f), reverse=True)


def _candidates(weight, tokens: int, block: int, keeps, latency: LatencyModel, units=None, width: bool = True,
                multiple: int = 1) -> list:
    out_f, in_f = weight.shape
    forms = [("dense", 1.0)] + ([("width", k) for k in _widths(out_f, keeps, multiple)] if width else [])
    if out_f % block == 0 and in_f % block == 0:
        forms += [("bsr", k) for k in keeps]
    if in_f % 4 == 0:
        forms.append(("2:4", 0.5))
    shapes = [(kind, tokens, in_f, out_f, keep) for kind, keep in forms]
    # a model that can time a layer's forms together (interleaved) does; any other is asked form by form
    times = latency.sweep(shapes) if hasattr(latency, "sweep") else [latency(*f) for f in shapes]
    return [Candidate(kind, keep, ms, _energy_kept(weight, kind, keep, block, units))
            for (kind, keep), ms in zip(forms, times, strict=True)]


def _choose(candidates: list, budget: float) -> tuple:
    fits = [c for c in candidates if c.latency_ms <= budget]
    if not fits:  # a layer gutted for a few percent of its time is a loss: it stays dense, and says so
        fastest = min(candidates, key=lambda c: c.latency_ms)
        return candidates[0], (f"kept dense: no form meets the budget {budget:.3f} ms; the fastest, {fastest.kind} "
                               f"keeping {fastest.keep:.0%}, takes {fastest.latency_ms:.3f} ms and keeps "
                               f"{fastest.importance_kept:.1%} of the weight energy")
    best = max(fits, key=lambda c: (c.importance_kept, -c.latency_ms))
    others = sorted((c for c in fits if c is not best), key=lambda c: -c.importance_kept)
    runner = (f"; next best within budget: {others[0].kind} keeping {others[0].keep:.0%} "
              f"({others[0].importance_kept:.1%})") if others else ""
    return best, (f"{best.kind} keeping {best.keep:.0%}: {best.importance_kept:.1%} of the weight energy at "
                  f"{best.latency_ms:.3f} ms <= budget {budget:.3f} ms{runner}")


def plan_layers(model: nn.Module, example_inputs, *, speedup: float, layers: str = "*", block: int = 32,
                keeps=KEEPS, latency: LatencyModel | None = None, width_units: dict | None = None,
                multiple: int = 1, consumers: dict | None = None) -> list:
    """A LayerChoice for every nn.Linear / 1x1 conv matching `layers` (comma-separated globs).
    width_units: {layer: energy of each output channel over its group}; only these layers get
    width candidates (None: every layer, scored by its own rows). multiple: widths are
    rounded to multiples of it. consumers: {layer: the layer reading its output channels
    alone}; where a layer is narrowed, its consumer planned after it is priced and scored on
    the inputs left (the channels of most group energy), against its budget at full width."""
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
    was_training = model.training
    try:
        tokens = _tokens(model.eval(), inputs, names)
    finally:
        model.train(was_training)
    choices, narrowed = [], {}  # narrowed: consumer -> (producer, the input columns its width cut keeps)
    for name in names:
        module = model.get_submodule(name)
        weight = kind_of(module).weight(module)
        units = None if width_units is None else width_units.get(name)
        producer, cols = narrowed.get(name, (None, None))
        candidates = _candidates(weight if cols is None else weight[:, cols], tokens[name], block, keeps, latency,
                                 units, width_units is None or name in width_units, multiple)
        # the budget is of the layer as it was: a narrowed input is part of how it gets there
        full = candidates[0].latency_ms if cols is None else \
            latency("dense", tokens[name], weight.shape[1], weight.shape[0], 1.0)
        budget = full / speedup
        chosen, why = _choose(candidates, budget)
        if cols is not None:
            why = f"input narrowed to {len(cols)} of {weight.shape[1]} by {producer}'s width cut; {why}"
        if chosen.kind == "width" and name in (consumers or {}):
            k = round(chosen.keep * weight.shape[0])
            energy = units if units is not None else weight.detach().float().pow(2).sum(1)
            narrowed[consumers[name]] = (name, energy.topk(k).indices.sort().values)
        choices.append(LayerChoice(name, tuple(weight.shape), tokens[name], budget, chosen, tuple(candidates), why,
                                   None if cols is None else len(cols)))
    return choices
