"""Modules that hold BSR weights and call hwprune::bsr_linear: BSRLinear for nn.Linear and
BSRConv1x1 for a 1x1 nn.Conv2d (groups 1; a stride reads every s-th pixel, as the conv does)."""
from __future__ import annotations

import torch
from torch import nn

from . import ops


def to_bsr(weight: torch.Tensor, block: int) -> tuple:
    """(crow_indices, col_indices, values) of a dense (out x in) weight's nonzero B x B blocks,
    each block stored transposed (in x out), the layout hwprune::bsr_linear reads."""
    out_f, in_f = weight.shape
    grid = weight.detach().reshape(out_f // block, block, in_f // block, block).permute(0, 2, 1, 3)
    present = grid.ne(0).any(dim=(2, 3))
    rows, cols = present.nonzero(as_tuple=True)
    crow = torch.zeros(out_f // block + 1, dtype=torch.int64, device=weight.device)
    crow[1:] = torch.cumsum(present.sum(1), 0)
    values = grid[rows, cols].transpose(1, 2).contiguous()
    return crow, cols.to(torch.int64).contiguous(), values


class BSRLinear(nn.Module):
    """y = x @ W^T + b with W stored as B x B blocks (BSR); zero blocks are neither stored nor read."""

    def __init__(self, in_features: int, out_features: int, block: int, crow: torch.Tensor, col: torch.Tensor,
                 values: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        if block not in ops.BLOCK_SIZES or in_features % block or out_features % block:
            raise ValueError(f"block {block} must be one of {ops.BLOCK_SIZES} and divide {out_features}x{in_features}")
        self.in_features, self.out_features, self.block = in_features, out_features, block
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.values = nn.Parameter(values)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_linear(cls, layer: nn.Linear, block: int) -> "BSRLinear":
        crow, col, values = to_bsr(layer.weight, block)
        return cls(layer.in_features, layer.out_features, block, crow, col, values, layer.bias)

    @property
    def density(self) -> float:
        return self.col_indices.numel() * self.block ** 2 / (self.in_features * self.out_features)

    def dense_weight(self) -> torch.Tensor:
        return ops.dense_weight(self.crow_indices, self.col_indices, self.values.detach(), self.out_features,
                                self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.hwprune.bsr_linear(x, self.crow_indices, self.col_indices, self.values, self.bias,
                                            self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}, "
                f"density={self.density:.3f}")


class BSRConv1x1(BSRLinear):
    """A 1x1 convolution (groups 1) as BSRLinear over the channels of every pixel."""

    def __init__(self, *args, stride: tuple = (1, 1), **kwargs):
        super().__init__(*args, **kwargs)
        self.stride = tuple(stride)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, block: int) -> "BSRConv1x1":
        crow, col, values = to_bsr(conv.weight.flatten(1), block)
        return cls(conv.in_channels, conv.out_channels, block, crow, col, values, conv.bias, stride=conv.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):  # a 1x1 kernel without padding reads every s-th pixel
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        y = super().forward(x.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)
