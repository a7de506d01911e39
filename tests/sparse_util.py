"""Random BSR weights for the kernel tests: a dense weight with whole B x B blocks zeroed, and
its BSR triple in hwprune::bsr_linear's layout."""
from __future__ import annotations

import torch

from hwprune.sparse.bsr import to_bsr


def random_bsr(out_f: int, in_f: int, block: int, density: float, seed: int, dtype=torch.float32) -> tuple:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    present = torch.rand(out_f // block, in_f // block, generator=g) < density
    weight = weight * present.repeat_interleave(block, 0).repeat_interleave(block, 1)
    weight = weight.to(dtype)
    crow, col, values = to_bsr(weight, block)
    return weight, crow, col, values


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 96)
        self.head = torch.nn.Linear(96, 10)  # 10 outputs: no block size divides it

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class PointwiseNet(torch.nn.Module):
    """3x3 stem, 1x1 expand (stride 1 and 2), a grouped 1x1 conv, a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.expand = torch.nn.Conv2d(32, 64, 1)
        self.down = torch.nn.Conv2d(64, 64, 1, stride=2, bias=False)
        self.grouped = torch.nn.Conv2d(64, 64, 1, groups=4)
        self.fc = torch.nn.Linear(64, 32)

    def forward(self, x):
        x = torch.relu(self.expand(torch.relu(self.stem(x))))
        x = self.grouped(torch.relu(self.down(x)))
        return self.fc(x.mean((2, 3)))


def mlp():
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(4, 64),)


def pointwise_net():
    torch.manual_seed(0)
    return PointwiseNet().eval(), (torch.randn(2, 3, 16, 16),)


class Branches(torch.nn.Module):
    """Two linears whose outputs are added: their output channels are one group with two
    producers, so neither may be narrowed alone (no width candidate)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(64, 128)
        self.b = torch.nn.Linear(64, 128)
        self.head = torch.nn.Linear(128, 32)

    def forward(self, x):
        return self.head(torch.relu(self.a(x) + self.b(x)))


class WideMLP(torch.nn.Sequential):
    """A transformer-sized feed-forward pair and a head, at 1024 rows: large enough that the
    analytic GPU model is not bound by kernel launches."""

    def __init__(self):
        super().__init__(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512), torch.nn.GELU(),
                         torch.nn.Linear(512, 32))


def branches():
    torch.manual_seed(0)
    return Branches().eval(), (torch.randn(4, 64),)


def wide_mlp():
    torch.manual_seed(0)
    return WideMLP().eval(), (torch.randn(1024, 512),)


def flops_model(bsr_efficiency: float, two_four_speedup: float = 1.0):
    """Latency proportional to the multiply-adds done; BSR runs at `bsr_efficiency` of dense speed."""
    def latency(kind, tokens, in_f, out_f, keep):
        work = tokens * in_f * out_f * 1e-6
        return {"dense": work, "width": work * keep, "bsr": work * keep / bsr_efficiency,
                "2:4": work / two_four_speedup}[kind]
    return latency
