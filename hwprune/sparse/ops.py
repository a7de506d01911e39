"""`hwprune::bsr_linear`: y = x @ W^T + bias with W (out x in) block-sparse, as one torch op.

BSR layout (the op's contract, shared by every kernel): W's blocks are grouped by block row
over the outputs; `crow_indices` (out/B + 1) gives each block row's range in `col_indices`
(the block column over the inputs) and `values` (nnz, B, B). Each block is stored
TRANSPOSED, in x out, so a tile of x times the block is the product: both the CPU
micro-kernel and the Triton tl.dot read it that way without a transpose per call.

Registered with torch.library.custom_op and a fake implementation, so torch.export keeps it
as one node and a .pt2 that uses it loads wherever hwprune is imported. Which kernel runs:
CUDA tensors -> Triton (hwprune.sparse.triton_bsr); fp32 on the CPU -> the native kernel
(hwprune.sparse.native) where it is built, else this module's reference; any other dtype on
the CPU -> the reference.
"""
from __future__ import annotations

from typing import Optional

import torch

BLOCK_SIZES = (16, 32, 64)


def dense_weight(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, out_features: int,
                 in_features: int) -> torch.Tensor:
    """The dense (out x in) weight that a BSR triple stands for, zeros outside its blocks."""
    b = values.shape[-1]
    rows = torch.repeat_interleave(torch.arange(out_features // b, device=crow.device), crow.diff())
    grid = values.new_zeros(out_features // b, in_features // b, b, b)
    grid[rows, col.long()] = values.transpose(1, 2)
    return grid.permute(0, 2, 1, 3).reshape(out_features, in_features)


def reference(x, crow, col, values, bias, out_features: int) -> torch.Tensor:
    """The oracle every kernel is tested against: F.linear with the dense masked weight."""
    w = dense_weight(crow, col, values, out_features, x.shape[-1])
    return torch.nn.functional.linear(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))


def kernel_for(device: torch.device | str, dtype: torch.dtype) -> str:
    """The name of the kernel that runs the op for tensors on `device` of `dtype`."""
    device = torch.device(device)
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and dtype == torch.float32:
        from . import native
        return "native" if native.status().loaded else "reference"
    return "reference"


@torch.library.custom_op("hwprune::bsr_linear", mutates_args=())
def bsr_linear(x: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor,
               bias: Optional[torch.Tensor], out_features: int) -> torch.Tensor:
    kernel = kernel_for(x.device, x.dtype)
    if kernel == "triton":
        from .triton_bsr import bsr_linear_triton
        return bsr_linear_triton(x, crow_indices, col_indices, values, bias, out_features)
    if kernel == "native":
        return torch.ops.hwprune_native.bsr_linear(x, crow_indices, col_indices, values, bias, out_features)
    return reference(x, crow_indices, col_indices, values, bias, out_features)


@bsr_linear.register_fake
def _(x, crow_indices, col_indices, values, bias, out_features):
    torch._check(x.shape[-1] % values.shape[-1] == 0)
    return x.new_empty((*x.shape[:-1], out_features))


def _setup_context(ctx, inputs, output):
    x, crow, col, values, bias, out_features = inputs
    ctx.save_for_backward(x, crow, col, values)
    ctx.has_bias = bias is not None
    ctx.out_features = out_features


def _backward(ctx, grad):
    """dx = dy @ W; each stored block (in x out) gets x_cols^T @ dy_rows of its position; db = sum dy."""
    x, crow, col, values = ctx.saved_tensors
    b, k, n = values.shape[-1], x.shape[-1], ctx.out_features
    w = dense_weight(crow, col, values, n, k).to(grad.dtype)
    g2, x2 = grad.reshape(-1, n), x.reshape(-1, k)
    rows = torch.repeat_interleave(torch.arange(n // b, device=crow.device), crow.diff())
    xb = x2.view(-1, k // b, b)[:, col.long()]   # (M, nnz, B_in)
    gb = g2.view(-1, n // b, b)[:, rows]          # (M, nnz, B_out)
    grad_values = torch.einsum("mji,mjo->jio", xb, gb).to(values.dtype)
    grad_bias = g2.sum(0) if ctx.has_bias else None
    return (grad @ w).to(x.dtype), None, None, grad_values, grad_bias, None


bsr_linear.register_autograd(_backward, setup_context=_setup_context)
