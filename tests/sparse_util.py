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
