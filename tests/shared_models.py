"""Small models that tests of more than one stage use (tests/ is on the test path), and `sliced`,
the hand cut both the oracle's tests and the masking tests feed to verify."""
import copy

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    """A residual MLP with a classifier head (criteria and regularisation tests)."""

    def __init__(self, d: int = 16, w: int = 24, inner: int = 32, classes: int = 4):
        super().__init__()
        self.fc1, self.up = nn.Linear(d, w), nn.Linear(w, inner)
        self.down, self.head = nn.Linear(inner, w), nn.Linear(w, classes)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.head(torch.relu(h + self.down(torch.relu(self.up(h)))))


class SilentLiteral(nn.Module):
    """view(b, -1, 4) with a literal inner size: after a cut of the inner factor the view
    still succeeds but regroups channels, so the output is silently wrong."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        b, c, h, w = y.shape
        z = y.view(b, -1, 4, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.b(z)


def sliced(model: nn.Module, kept: dict) -> nn.Module:
    """A copy of the model with each tensor cut to {fqn: {dim: indices}}, in that order. Module
    attributes are left alone: these modules' forwards read only their tensors' sizes."""
    slim = copy.deepcopy(model)
    with torch.no_grad():
        for fqn, dims in kept.items():
            owner, _, leaf = fqn.rpartition(".")
            mod = slim.get_submodule(owner)
            t = getattr(mod, leaf)
            for d, idx in sorted(dims.items()):
                t = t.index_select(int(d), torch.as_tensor(np.asarray(idx), dtype=torch.long))
            if leaf in mod._parameters:
                mod._parameters[leaf] = nn.Parameter(t.clone())
            else:
                mod._buffers[leaf] = t.clone()
    return slim
