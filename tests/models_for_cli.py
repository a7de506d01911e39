"""Tiny models for the CLI tests, reachable as factory specs `models_for_cli:NAME`.

pytest puts tests/ on sys.path (rootdir-relative, no __init__.py), so the in-process CLI
imports this module; the subprocess test sets PYTHONPATH to tests/.
"""
import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Two conv-bn-relu blocks and a classifier: the inner channels (8, 16) can be cut."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _inputs(*shape):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)


def tiny_convnet():
    torch.manual_seed(0)
    return TinyConvNet(), _inputs(1, 3, 16, 16)


def tiny_convnet_other_seed():
    """The same architecture with other weights: a second checkpoint for `hwprune apply`."""
    torch.manual_seed(1)
    return TinyConvNet(), _inputs(1, 3, 16, 16)


def linear_only():
    """Its only channels are the model's input and output, which stay frozen: nothing to cut."""
    return nn.Sequential(nn.Linear(4, 4)), _inputs(1, 4)


def not_a_module():
    return {"weight": torch.zeros(2)}
