"""Mean compensation (`compensate=True`, `--compensate`): where a removed channel ends in a
linear or an unpadded convolution, that layer reads the channel's calibration mean instead of
zero, and the constant it adds to the layer's output is folded into the layer's bias.

A layer y = W x + b that loses channel c changes by W[:, c] x_c. Reading x_c as the constant
m_c instead leaves W[:, c] (x_c - m_c), and m_c = E[x_c] is the constant that makes this
smallest in expectation: after ReLUs and GELUs channels are far from zero-mean, so zeroing
them shifts every output of the layer, and the shift compounds through the network. With no
padding the constant input gives a constant output (no border), so W[:, c] m_c (summed over
the kernel) is exactly a bias. The oracle is then mask equivalence with these fills: the slim
model equals the original with each removed channel read as its mean by a folded layer and as
zero by any other op (verify(..., fills=)).

The means are of the original model on the calibration inputs (over the batch and every
position). A layer without a bias that an inference batch norm alone reads takes the shift in the norm's
running mean instead (BN(y + s) with mean mu is BN(y) with mean mu - s); one with neither
gains a bias where it is a torch Linear or ConvNd. Layers that are not folded: padded
convolutions (the border would differ), transposed ones, layers called more than once (a
shared bias would be folded twice), a layer without bias or norm in an exported graph (a
.pt2, whose graph has no slot to add one) or in a Hugging Face model (its config would
rebuild the layer without one).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .graph.rules import OpCall
from .graph.rules.conv import CONVS
from .graph.masked import run_masked

aten = torch.ops.aten
_CONVS = {*CONVS, aten.convolution.default}  # transposed ones are refused by their argument


@dataclass(frozen=True)
class Fold:
    """A layer whose removed input channels are read as their means: `reader` (a graph node)
    reads activation `tensor` along `dim`; its weight and bias are parameters by these names."""
    reader: str
    tensor: str
    dim: int
    weight: str
    bias: str | None  # the bias to add to, or the running mean of the batch norm after it
    conv: dict | None  # dilation and groups of a convolution; None for a linear
    sign: int = 1  # -1: `bias` is a running mean, which the shift is subtracted from


def _fold_of(graph, node, tensor: str, dim: int, calls: dict, params: dict, model, exported: bool):
    """The Fold for `node` reading `tensor` along `dim`, or None where the mean cannot become a bias."""
    if node.op != "call_function" or (node.target not in _CONVS and node.target != aten.linear.default):
        return None
    op = OpCall(node, None, None, "")
    x = op.arg(0, "input")
    if not isinstance(x, torch.fx.Node) or x.name != tensor:
        return None
    w, b = op.arg(1, "weight"), op.arg(2, "bias")
    if not isinstance(w, torch.fx.Node) or w.name not in params or calls.get(w.name, 0) != 1:
        return None
    if b is not None and (not isinstance(b, torch.fx.Node) or b.name not in params or calls.get(b.name, 0) != 1):
        return None
    bias, sign = (params[b.name], 1) if b is not None else _norm_after(node, calls, params)
    if bias is None and (exported or not _takes_bias(model, params[w.name])):
        return None
    rank = len(graph.shapes[tensor])
    if node.target == aten.linear.default:
        return Fold(node.name, tensor, dim, params[w.name], bias, None, sign) if dim == rank - 1 else None
    pad = op.arg(4, "padding", [0])
    if dim != 1 or op.arg(None, "transposed", False) or not (pad == "valid" or (
            not isinstance(pad, str) and all(int(p) == 0 for p in pad))):
        return None
    nd = rank - 2
    dil = [int(v) for v in op.arg(5, "dilation", [1])]
    conv = {"dilation": dil * nd if len(dil) == 1 else dil, "groups": int(op.arg(6, "groups", 1))}
    return Fold(node.name, tensor, dim, params[w.name], bias, conv, sign)


def _norm_after(node, calls: dict, params: dict) -> tuple:
    """(running mean, -1) of an inference batch norm that alone reads the layer's output (a
    constant shift of its input is a shift of its running mean), else (None, 1)."""
    users = list(node.users)
    if len(users) != 1 or users[0].target != aten.batch_norm.default:
        return None, 1
    norm = OpCall(users[0], None, None, "")
    mean = norm.arg(3, "running_mean")
    if norm.arg(0, "input") is not node or norm.arg(5, "training") or not isinstance(mean, torch.fx.Node) \
            or mean.name not in params or calls.get(mean.name, 0) != 1:
        return None, 1
    return params[mean.name], -1


def _takes_bias(model, weight: str) -> bool:
    """Whether the weight's owner is a torch linear or convolution, whose forward reads
    self.bias, so that a bias set on it is used; not in a Hugging Face model, whose config
    would rebuild the layer without it."""
    path, _, name = weight.rpartition(".")
    owner = model.get_submodule(path) if path else model
    return name == "weight" and not hasattr(getattr(model, "config", None), "to_dict") \
        and type(owner).forward in (nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def find_folds(graph, model) -> list:
    """Every place a channel of a prunable group ends in a layer that can fold its mean."""
    from .importance.fisher import gated_dims, prunable_labels
    prunable = prunable_labels(graph)
    kinds = graph.traced.placeholders
    params = {n: fqn for n, (k, fqn) in kinds.items() if k in ("param", "buffer")}
    calls = {}
    for node in graph.traced.graph.nodes:
        if node.op == "call_function":
            for a in set(node.all_input_nodes):
                calls[a.name] = calls.get(a.name, 0) + 1
    exported = graph.traced.tracer == "exported graph"
    nodes = {n.name: n for n in graph.traced.graph.nodes}
    folds = []
    for tensor, dims in gated_dims(graph, prunable).items():
        for d, _, readers in dims:
            for r in sorted(readers):
                f = _fold_of(graph, nodes[r], tensor, d, calls, params, model, exported)
                if f is not None:
                    folds.append(f)
    return folds


def channel_means(graph, model, calibration: list, folds: list) -> dict:
    """{(tensor, dim): mean of each channel} over the calibration inputs, in the original model."""
    at = {}  # tensor: [(dim, the reader at which its mean is taken, tensor)]
    for f in folds:
        if all(d != f.dim for d, _, _ in at.get(f.tensor, [])):
            at.setdefault(f.tensor, []).append((f.dim, f.reader, f.tensor))
    sums = {}

    def capture(v, entries, reader):
        for d, r, t in entries:
            if r == reader.name:
                other = [i for i in range(v.dim()) if i != d]
                sums[(t, d)] = sums.get((t, d), 0) + v.detach().double().mean(dim=other)
        return v

    with torch.inference_mode():
        for x in calibration:
            run_masked(graph, model, x, at, capture)
    return {k: (s / len(calibration)).float() for k, s in sums.items()}


def fills_for(graph, folds: list, means: dict, removed: np.ndarray) -> dict:
    """{reader: (dim, fill)}: what each folded layer reads in place of its removed channels
    (their means; 0 at the channels kept, which it reads as they are)."""
    out = {}
    for f in folds:
        gone = torch.from_numpy(removed[graph.dim_labels(f.tensor, f.dim)])
        if gone.any() and (f.tensor, f.dim) in means:
            out[f.reader] = (f.dim, torch.where(gone, means[(f.tensor, f.dim)], 0.0))
    return out


def bias_deltas(folds: list, fills: dict, tensors: dict) -> dict:
    """{weight name: (bias name or None, what to add to it)} of the original layer: the layer
    applied to its fill alone, without bias (a constant in, a constant out); negated where
    the bias is a batch norm's running mean."""
    out = {}
    with torch.no_grad():
        for f in folds:
            if f.reader not in fills:
                continue
            w = tensors[f.weight].detach().float()
            fill = fills[f.reader][1]
            if f.conv is None:
                delta = torch.nn.functional.linear(fill, w)
            else:
                k = [(s - 1) * dl + 1 for s, dl in zip(w.shape[2:], f.conv["dilation"])]
                x = fill.view(1, -1, *[1] * len(k)).expand(1, fill.numel(), *k)
                conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                        3: torch.nn.functional.conv3d}[len(k)]
                delta = conv(x, w, None, 1, 0, f.conv["dilation"], f.conv["groups"]).flatten()
            out[f.weight] = (f.bias, delta * f.sign)
    return out


def fold_biases(slim: nn.Module, deltas: dict, kept: dict) -> int:
    """Add each delta, cut like its layer's outputs, to the slim layer's bias or running mean
    (a new bias where it had neither). Returns the number of layers changed."""
    from .surgery import tensor_at
    with torch.no_grad():
        for weight, (bias, delta) in deltas.items():
            rows = (kept.get(bias) or kept.get(weight) or {}).get(0)
            if rows is not None:
                delta = delta[torch.as_tensor(np.asarray(rows), dtype=torch.long)]
            if bias is not None:
                t = tensor_at(slim, bias)
                t.add_(delta.to(t.dtype))
                continue
            owner = slim.get_submodule(weight.rpartition(".")[0]) if "." in weight else slim
            w = owner.weight
            owner.bias = nn.Parameter(delta.to(w.dtype).to(w.device), requires_grad=w.requires_grad)
    return len(deltas)


def compensation_of(analysis) -> tuple:
    """(folds, means) for an analysis (hwprune.analysis.Analysis), measured once and kept on
    it: where removed channels can be read as their means, and the means on its calibration
    inputs (its example inputs where it has none)."""
    if "compensation" not in analysis.memo:
        folds = find_folds(analysis.graph, analysis.model)
        calibration = analysis.calibration or [analysis.example_inputs]
        analysis.memo["compensation"] = (folds, channel_means(analysis.graph, analysis.model, calibration, folds))
    return analysis.memo["compensation"]
