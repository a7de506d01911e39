"""What the student is trained to match: the teacher's outputs, its features at the kept
channels, and the labels where the data has them.

Outputs are compared tensor by tensor, in the order the model returns them (a tensor; a tuple
or list, flattened; a dict or Hugging Face ModelOutput, by key). The rule for each (auto):
    a tensor named "logits", or a plain 2-D (N, C) output     KL at temperature T (logits)
    a plain 2-D output whose teacher rows have unit L2 norm    1 - cosine (an embedding, such
                                                               as hwprune.zoo:minilm's)
    any other tensor (last_hidden_state, pooler_output,        MSE
    feature maps, 3-D and 4-D outputs)
RecoverConfig.output_loss = "kl" | "mse" | "cosine" applies one rule to all of them instead.
Every loss is a mean of per-item figures, so the mean over N processes' equal shares of a
batch is the figure of the whole batch: what makes a torchrun run equal a single process.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

UNIT_NORM_TOL = 1e-3


def _per_item(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(1)


def kl_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(t/T) || softmax(s/T)) over the last dim, per item (Hinton et al.: the
    T^2 keeps the gradient's scale independent of T)."""
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return temperature ** 2 * _per_item(kl.reshape(s.shape[0], -1)).mean()


def mse_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    return _per_item((s - t) ** 2).mean()


def cosine_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    return _per_item(1 - F.cosine_similarity(s, t, dim=-1).reshape(s.shape[0], -1)).mean()


OUTPUT_LOSSES: dict[str, Callable] = {"kl": kl_loss, "mse": mse_loss, "cosine": cosine_loss}


class OutputRule(NamedTuple):
    name: str  # where the tensor is in the output: "logits", "output", "output[1]", ...
    loss: str  # a key of OUTPUT_LOSSES


def named_tensors(out, name: str = "output") -> list:
    """[(name, tensor)] of the floating-point tensors of a model output, in order."""
    if isinstance(out, torch.Tensor):
        return [(name, out)] if out.is_floating_point() else []
    if hasattr(out, "items"):  # dict, ModelOutput
        return [pair for k, v in out.items() for pair in named_tensors(v, str(k))]
    if isinstance(out, (tuple, list)):
        return [pair for i, v in enumerate(out) for pair in named_tensors(v, f"{name}[{i}]")]
    return []


def output_rules(teacher_out, choice: str) -> list[OutputRule]:
    """The rule for each output tensor (module docstring), from one teacher output."""
    pairs = named_tensors(teacher_out)
    if not pairs:
        raise InputError("the teacher's output holds no floating-point tensor to distill from: return a tensor, "
                         "a tuple of tensors or a ModelOutput")
    plain = not hasattr(teacher_out, "items")
    rules = []
    for name, t in pairs:
        if choice != "auto":
            rules.append(OutputRule(name, choice))
        elif name == "logits":
            rules.append(OutputRule(name, "kl"))
        elif plain and t.dim() == 2 and t.shape[1] > 1:
            unit = bool(((t.float().norm(dim=1) - 1).abs() < UNIT_NORM_TOL).all())
            rules.append(OutputRule(name, "cosine" if unit else "kl"))
        else:
            rules.append(OutputRule(name, "mse"))
    return rules


def logits_of(out, rules: list[OutputRule]) -> torch.Tensor | None:
    """The first output compared by KL: what labels are classes of."""
    tensors = dict(named_tensors(out))
    return next((tensors[r.name] for r in rules if r.loss == "kl"), None)


def distill_loss(student_out, teacher_out, rules: list[OutputRule], temperature: float) -> torch.Tensor:
    s, t = dict(named_tensors(student_out)), dict(named_tensors(teacher_out))
    total = 0.0
    for r in rules:
        if s[r.name].shape != t[r.name].shape:
            raise InputError(f"the student's output {r.name} has shape {list(s[r.name].shape)} and the teacher's "
                             f"{list(t[r.name].shape)}: distillation compares outputs of the same shape; is the "
                             "teacher the model the student was cut from?")
        total = total + OUTPUT_LOSSES[r.loss](s[r.name].float(), t[r.name].float(), temperature)
    return total / len(rules)


# ---------------------------------------------------------------- features

# module type -> (dim of its weight that indexes output channels, dim of its output that holds them)
FEATURE_DIMS: dict[type, tuple[int, int]] = {
    nn.Conv1d: (0, 1), nn.Conv2d: (0, 1), nn.Conv3d: (0, 1),
    nn.ConvTranspose1d: (1, 1), nn.ConvTranspose2d: (1, 1), nn.ConvTranspose3d: (1, 1),
    nn.Linear: (0, -1),
}


def _dims_of(module: nn.Module):
    return next((FEATURE_DIMS[c] for c in type(module).__mro__ if c in FEATURE_DIMS), None)


class FeatureMatch:
    """Hooks on the student's and the teacher's conv and linear modules that the cut touched
    (kept: the slim report's {param fqn: {dim: [kept indices]}}, any dim of their weight):
    the student's output is compared with the teacher's at the kept output channels (all of
    them where only the input channels were cut). loss() = mean over those modules of the
    per-item relative squared error ||s_i - t_i[kept]||^2 / ||t_i[kept]||^2: relative, so
    layers of any scale weigh alike."""

    def __init__(self, student: nn.Module, teacher: nn.Module, kept: dict):
        self.index: dict[str, tuple[torch.Tensor | None, int]] = {}
        for fqn, dims in kept.items():
            path, _, leaf = fqn.rpartition(".")
            try:
                module = student.get_submodule(path)
                teacher.get_submodule(path)
            except AttributeError:
                continue
            spec = _dims_of(module)
            if leaf != "weight" or spec is None:
                continue
            idx = {str(d): v for d, v in dims.items()}.get(str(spec[0]))
            self.index[path] = (None if idx is None else torch.as_tensor(idx, dtype=torch.long), spec[1])
        if not self.index:
            raise InputError("feature distillation found no conv or linear module that the cut touched: give the "
                             "slim report's 'kept' of this model, or turn features off")
        self.student_out: dict = {}
        self.teacher_out: dict = {}
        self.handles = [m.register_forward_hook(self._hook(self.student_out, p))
                        for p, m in student.named_modules() if p in self.index]
        self.handles += [m.register_forward_hook(self._hook(self.teacher_out, p))
                         for p, m in teacher.named_modules() if p in self.index]

    @staticmethod
    def _hook(store: dict, path: str):
        def hook(module, args, output):
            store[path] = output
        return hook

    def loss(self) -> torch.Tensor:
        total = 0.0
        for path, (idx, dim) in self.index.items():
            s = self.student_out[path].float()
            t = self.teacher_out[path].float()
            t = t if idx is None else t.index_select(dim, idx.to(s.device))
            err = ((s - t) ** 2).reshape(s.shape[0], -1).sum(1)
            total = total + (err / (t ** 2).reshape(t.shape[0], -1).sum(1).clamp_min(1e-12)).mean()
        self.student_out.clear()
        self.teacher_out.clear()
        return total / len(self.index)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
