"""Tiny models for the CLI tests, reachable as factory specs `models_for_cli:NAME`.

pytest puts tests/ on sys.path (rootdir-relative, no __init__.py), so the in-process CLI
imports this module; the subprocess test sets PYTHONPATH to tests/.
"""
import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Two conv-bn-relu blocks and a classifier: the inner channels (8, 16) can be cut."""

    def __init__(self, c1: int = 8, c2: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _inputs(*shape):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)


def tiny_convnet():
    torch.manual_seed(0)
    return TinyConvNet(), _inputs(1, 3, 16, 16)


def lattice_convnet():
    """TinyConvNet at 32 and 64 channels: halved by --ratio 0.5, its widths stay on every
    lattice (8 and 16 on the CPU, 8 for fp16), so a ratio with a target still cuts."""
    torch.manual_seed(0)
    return TinyConvNet(32, 64), _inputs(1, 3, 32, 32)


def jetson_convnet():
    """TinyConvNet at 32 and 64 channels on 224x224: wide enough in time that the Orin Nano's
    analytic model can plan --speedup 1.5 (at 32x32 every kernel is launch-bound)."""
    torch.manual_seed(0)
    return TinyConvNet(32, 64), _inputs(1, 3, 224, 224)


def tiny_convnet_other_seed():
    """The same architecture with other weights: a second checkpoint for `hwprune apply`."""
    torch.manual_seed(1)
    return TinyConvNet(), _inputs(1, 3, 16, 16)


def tiny_convnet_bf16():
    """TinyConvNet in bfloat16, which onnxruntime's CPU provider cannot run: no checked ONNX."""
    model, x = tiny_convnet()
    return model.to(torch.bfloat16), (x[0].to(torch.bfloat16),)


def linear_only():
    """Its only channels are the model's input and output, which stay frozen: nothing to cut."""
    return nn.Sequential(nn.Linear(4, 4)), _inputs(1, 4)


def not_a_module():
    return {"weight": torch.zeros(2)}
