"""Small models that tests of more than one stage use (tests/ is on the test path)."""
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
