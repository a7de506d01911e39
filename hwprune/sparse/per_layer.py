"""sparsify(speedup=X): each layer's form chosen from the target's latency model, applied, proven.

    model, report = hwprune.sparsify(model, example_inputs, speedup=2, target="cpu", layers="*.dense")

1. plan (hwprune.sparse.choose.plan_layers): per layer, the form keeping the most weight energy
   within the layer's budget (its dense latency / X): dense at a narrower width, BSR keeping a
   fraction of its blocks, or 2:4, priced by hwprune.sparse.latency for the target.
2. width: a narrower output is a channel cut, and every layer that reads those channels must
   lose the same inputs. Width is offered only where the layer's output channels form a
   prunable group with ONE other sparsifiable layer's inputs and nothing else (an FFN's first
   linear and its second): then the planner's price (this layer narrower; the consumer only
   gets cheaper) is the truth, and the channels kept are those of hwprune's l2 importance over
   the group. The cut itself is hwprune's pass (slim with widths), verified as slim verifies.
   Layers whose channels reach further (attention heads, the residual stream) get no width
   candidate; their forms are BSR and 2:4.
3. BSR and 2:4 masks on the cut model's weights (a consumer's narrowed input included).
4. the proof, before anything is returned: the result equals the original with the masked
   weights zeroed and the removed channels' consumer columns zeroed (hwprune.sparse.prove).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import HwpruneError, InputError
from .choose import plan_layers
from .keep import mark
from .layers import effective_weight, kernel_name, kind_of, select_layers, set_module
from .masks import Pattern, compute_masks, two_four_mask
from .ops import BLOCK_SIZES
from .proof import prove

WIDTH_RULE = ("width only where the layer's output channels are coupled to one other sparsifiable layer's inputs "
              "alone, cut by hwprune's pass (slim with widths) over that group")


@dataclass(frozen=True)
class ChooseConfig:
    speedup: float
    target: str = "cpu"
    block: int = 32
    layers: str = "*"

    @classmethod
    def make(cls, speedup, target: str | None, block: int | None, layers: str | None) -> "ChooseConfig":
        from ..hardware.targets import get_target

        if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not speedup > 1.0:
            raise InputError(f"speedup {speedup}: give the latency speedup each chosen layer must reach, above 1 "
                             "(for example 2)")
        block = 32 if block is None else block
        if block not in BLOCK_SIZES:
            raise InputError(f"block {block}: the BSR candidates' block must be one of "
                             f"{', '.join(map(str, BLOCK_SIZES))}")
        target = target or "cpu"
        get_target(target)  # an unknown name fails here, with the names to choose from
        return cls(float(speedup), target, int(block), layers or "*")


@dataclass(frozen=True)
class WidthPair:
    group: int
    consumer: str
    units: torch.Tensor  # each output channel's squared norm over the group (hwprune's l2 importance, squared)


def width_pairs(model: nn.Module, analysis, names: set) -> dict:
    """{layer: WidthPair} for the layers of `names` whose output channels form a prunable group
    with one other sparsifiable layer's inputs and nothing else."""
    pairs = {}
    for group in analysis.prunable:
        members = [m.rpartition(":") for m in group.members]  # (fqn, ":", dim)
        producers = [fqn.rpartition(".")[0] for fqn, _, dim in members if fqn.endswith(".weight") and dim == "0"]
        modules = {fqn.rpartition(".")[0] for fqn, _, _ in members}
        if len(producers) != 1 or producers[0] not in names or len(modules) != 2:
            continue
        layer = producers[0]
        (consumer,) = modules - {layer}
        c = model.get_submodule(consumer)
        if kind_of(c) is None or kind_of(c).why_not(c) is not None or f"{consumer}.weight:1" not in group.members \
                or not set(group.members) <= {f"{layer}.weight:0", f"{layer}.bias:0", f"{consumer}.weight:1"}:
            continue
        units = 0
        for fqn, _, dim in members:
            p = model.get_parameter(fqn).detach().float()
            units = units + p.pow(2).sum([d for d in range(p.dim()) if d != int(dim)])
        pairs[layer] = WidthPair(group.id, consumer, units)
    return pairs


def _cut_widths(model, analysis, choices, pairs) -> tuple:
    """(model with the chosen widths cut by hwprune's pass, slim's kept, slim's verify or None)."""
    from ..api import slim

    widths = {pairs[c.layer].group: round(c.chosen.keep * c.shape[0]) for c in choices if c.chosen.kind == "width"}
    if not widths:
        return copy.deepcopy(model), {}, None
    cut, report = slim(analysis, widths=widths)
    return cut, report["kept"], report["verify"]


def _apply_forms(cut: nn.Module, choices, block: int) -> dict:
    """Zero and swap each BSR / 2:4 choice in the (cut) model; {layer: its mask there}."""
    masks = {}
    with torch.no_grad():
        for c in choices:
            if c.chosen.kind not in ("bsr", "2:4"):
                continue
            layer = cut.get_submodule(c.layer)
            w = kind_of(layer).weight(layer)
            mask = two_four_mask(w) if c.chosen.kind == "2:4" else compute_masks(
                {c.layer: w}, Pattern("block", block), 1.0 - c.chosen.keep, "layer")[c.layer]
            layer.weight.mul_(mask.view(layer.weight.shape).to(layer.weight.dtype))
            if c.chosen.kind == "bsr":
                set_module(cut, c.layer, kind_of(layer).to_bsr(layer, block))
            else:
                mark(layer, "2:4")
            masks[c.layer] = mask
    return masks


def _index(kept: dict, layer: str, dim: int):
    idx = kept.get(f"{layer}.weight", {}).get(str(dim))
    return None if idx is None else torch.as_tensor(idx, dtype=torch.long)


def _in_original(mask, shape, rows, cols) -> torch.Tensor:
    """A mask of the original (out x in) weight: `mask` at the kept rows and columns, False elsewhere."""
    full = torch.zeros(shape, dtype=torch.bool)
    rows = torch.arange(shape[0]) if rows is None else rows
    cols = torch.arange(shape[1]) if cols is None else cols
    full[rows.unsqueeze(1), cols.unsqueeze(0)] = True if mask is None else mask.cpu()
    return full


def sparsify_per_layer(model: nn.Module, inputs: tuple, config: ChooseConfig, *, latency=None,
                       rtol: float = 1e-4) -> tuple:
    """(model with each layer in its chosen form, report); VerificationError if the proof fails."""
    from ..analysis import analyze
    from ..hardware.targets import get_target
    from .latency import latency_for

    target, was_training = get_target(config.target), model.training
    taken, skipped = select_layers(model, config.layers)
    width_rule = WIDTH_RULE
    try:
        analysis = analyze(model, inputs)
        pairs = width_pairs(model, analysis, set(taken))
    except HwpruneError as e:  # BSR and 2:4 need no channel groups: without them, width is not offered
        analysis, pairs = None, {}
        width_rule = f"width not offered: the model's channel groups could not be traced ({str(e).splitlines()[0]})"
    finally:
        model.train(was_training)
    latency, source = (latency, "given by the caller") if latency is not None else latency_for(target, config.block)
    # widths sit on the block (the consumer's input stays a whole number of blocks) and on every lattice rule
    # of the target (the strictest, whatever this host's ISA: a block of 16 or more already holds the CPU's)
    choices = plan_layers(model, inputs, speedup=config.speedup, layers=",".join(taken), block=config.block,
                          latency=latency, width_units={n: p.units for n, p in pairs.items()},
                          multiple=math.lcm(config.block, *(r.multiple for r in target.rules)),
                          consumers={n: p.consumer for n, p in pairs.items()})
    cut, kept, width_proof = _cut_widths(model, analysis, choices, pairs)
    model.train(was_training)
    cut_masks = _apply_forms(cut, choices, config.block)
    narrowed = {pairs[c.layer].consumer: c.layer for c in choices if c.chosen.kind == "width"}
    touched = [c.layer for c in choices] + [n for n in narrowed if n not in taken]
    index = {n: (_index(kept, n, 0), _index(kept, n, 1)) for n in touched}
    masks = {n: _in_original(cut_masks.get(n), kind_of(model.get_submodule(n)).weight(model.get_submodule(n)).shape,
                             *index[n]) for n in touched}
    proof = prove(model, cut, masks, inputs, rtol=rtol, kept=index)
    rows = [_row(model, cut, c, config.block, narrowed.get(c.layer), target.gpu is not None, config.speedup)
            for c in choices]
    report = {"config": {"mode": "per-layer", "speedup": config.speedup, "target": target.name,
                         "block": config.block, "layers": config.layers, "latency_model": source, "width": width_rule},
              "layers": rows, "skipped": [{"layer": n, "why": why} for n, why in skipped],
              "predicted": _predicted(rows), "weights": _weights(rows), "kept": kept, "verify": proof}
    if width_proof is not None:
        report["width_cut"] = {"pairs": {c.layer: {"group": pairs[c.layer].group, "consumer": pairs[c.layer].consumer,
                                                   "width": round(c.chosen.keep * c.shape[0])}
                                         for c in choices if c.chosen.kind == "width"},
                               "verify": width_proof}
    return cut.train(was_training), report


FORMS = {"dense": "dense", "width": "width", "bsr": "block", "2:4": "2:4"}


GPU_KERNELS = {"bsr": "hwprune::bsr_linear, Triton kernel on the target's GPU",
               "2:4": "semi-structured 2:4 (to_semi_structured, sm80+) or TensorRT's sparse weights"}


def _row(model, cut, choice, block: int, narrowed_by: str | None, on_gpu: bool, speedup: float) -> dict:
    c = choice.chosen
    original = kind_of(model.get_submodule(choice.layer)).weight(model.get_submodule(choice.layer)).detach()
    effective = effective_weight(cut.get_submodule(choice.layer))
    pattern = f"block:{block}" if c.kind == "bsr" else FORMS[c.kind]
    kernel = (GPU_KERNELS.get(c.kind) if on_gpu else None) or (
        kernel_name(Pattern.parse(pattern), effective) if c.kind in ("bsr", "2:4") else
        "dense F.linear/conv" + (" at the narrower width" if c.kind == "width" else ""))
    row = {"layer": choice.layer, "type": type(model.get_submodule(choice.layer)).__name__, "shape": list(choice.shape),
           "shape_after": list(effective.shape), "chosen": c.kind, "keep": round(c.keep, 4), "pattern": pattern,
           "block": block if c.kind == "bsr" else None,
           "sparsity": round(1.0 - float(effective.ne(0).sum()) / effective.numel(), 6), "kernel": kernel,
           "tokens": choice.tokens, "latency_ms": c.latency_ms, "dense_ms": choice.budget_ms * speedup,
           "budget_ms": choice.budget_ms, "energy_kept": c.importance_kept,
           "energy_kept_after": float(effective.float().pow(2).sum() / original.float().pow(2).sum().clamp(min=1e-30)),
           "why": choice.why,
           "candidates": [{"kind": x.kind, "keep": round(x.keep, 4), "latency_ms": x.latency_ms,
                           "energy_kept": x.importance_kept} for x in choice.candidates]}
    if narrowed_by is not None:
        row["input_narrowed_by"] = narrowed_by
    return row


def _predicted(rows: list) -> dict:
    dense, chosen = sum(r["dense_ms"] for r in rows), sum(r["latency_ms"] for r in rows)
    return {"dense_ms": dense, "chosen_ms": chosen, "speedup": dense / chosen if chosen else None,
            "note": "sum over the planned layers of each one's latency in its chosen form, a layer whose input a "
                    "width cut narrowed priced on the inputs left (where it comes after that cut in module order)"}


def _weights(rows: list) -> dict:
    total = sum(r["shape"][0] * r["shape"][1] for r in rows)
    kept = sum(round((1 - r["sparsity"]) * r["shape_after"][0] * r["shape_after"][1]) for r in rows)
    return {"in_layers": total, "zeroed": total - kept, "sparsity": (total - kept) / total}
