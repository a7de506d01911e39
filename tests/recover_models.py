"""Tiny models for the recovery tests (importable by torchrun worker scripts and factories)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CLASSES = 10


class ConvNet(nn.Module):
    """conv-bn-relu, conv-bn-relu, pool, linear: classifier logits (N, 10)."""

    def __init__(self, w: int = 16, classes: int = CLASSES):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w)
        self.c2, self.b2 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)
        self.fc = nn.Linear(w, classes)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class Embedder(ConvNet):
    """The same trunk, with an L2-normalized 8-d embedding as output (compared by cosine)."""

    def __init__(self, w: int = 16):
        super().__init__(w, classes=8)

    def forward(self, x):
        return F.normalize(super().forward(x), dim=1)


class Hidden(nn.Module):
    """A dict output with a 3-D last_hidden_state (compared by MSE), as Hugging Face models give."""

    def __init__(self, w: int = 16):
        super().__init__()
        self.up, self.down = nn.Linear(6, w), nn.Linear(w, 6)

    def forward(self, x):
        return {"last_hidden_state": self.down(F.relu(self.up(x)))}


class TextNet(nn.Module):
    """Token ids and mask to logits: for text data."""

    def __init__(self, vocab: int = 30522, w: int = 8):
        super().__init__()
        self.emb, self.fc = nn.Embedding(vocab, w), nn.Linear(w, 4)

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        return self.fc((self.emb(input_ids) * m).sum(1) / m.sum(1).clamp_min(1))


def pair(build=ConvNet, w: int = 16, keep: int = 8, seed: int = 0):
    """(teacher, student, kept): the student is the teacher with the first conv's output
    channels cut to its even-indexed `keep`, sliced by hand (no tracing: for worker scripts)."""
    torch.manual_seed(seed)
    teacher = build(w).eval()
    with torch.no_grad():  # a trained classifier's logits span several units, not the init's hundredths
        teacher.fc.weight.mul_(10)
    student = build(w).eval()
    idx = torch.arange(0, 2 * keep, 2)
    student.c1 = nn.Conv2d(3, keep, 3, padding=1)
    student.b1 = nn.BatchNorm2d(keep)
    student.c2 = nn.Conv2d(keep, w, 3, padding=1)
    with torch.no_grad():
        student.c1.weight.copy_(teacher.c1.weight[idx])
        student.c1.bias.copy_(teacher.c1.bias[idx])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(student.b1, name).copy_(getattr(teacher.b1, name)[idx])
        student.c2.weight.copy_(teacher.c2.weight[:, idx])
        student.c2.bias.copy_(teacher.c2.bias)
        student.b2.load_state_dict(teacher.b2.state_dict())
        student.fc.load_state_dict(teacher.fc.state_dict())
    kept = {"c1.weight": {"0": idx.tolist()}, "c2.weight": {"1": idx.tolist()}}
    return teacher, student.eval(), kept
