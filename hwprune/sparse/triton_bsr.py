"""The GPU kernel of hwprune::bsr_linear, in Triton: y = x @ W^T + bias, W in BSR.

One program computes a BLOCK_M x B tile of y (rows of x, one block row of W): it walks that
block row's nonzero blocks, loads the B-wide slice of x at each block's column and the block
itself (stored in x out, so tl.dot(x_tile, block) is the product), and accumulates in fp32.
Zero blocks are never loaded. Inputs fp16, bf16 or fp32; B in {16, 32, 64}; BLOCK_M and the
warp count are autotuned per (M bucket, N, K, B). Reading torch/sparse/_triton_ops.py
(PyTorch's bsr_dense_mm) gave the same outer loop; this one keeps the block row resident and
needs no transpose of the output.

Under TRITON_INTERPRET=1 (the CPU tests) the kernel runs in Triton's interpreter on CPU
tensors with one fixed configuration, since autotuning there only costs time. Triton 3.8's
interpreter computes tl.dot of bf16 tiles wrongly (errors of 1e10 on a 16x16 product; loads
and stores are right), so there, and only there, bf16 tiles are widened to fp32 first.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_CONFIGS = [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s)
            for m, w, s in ((16, 2, 2), (32, 4, 2), (64, 4, 3), (128, 4, 3), (128, 8, 3))]


def _bsr_linear_kernel(x_ptr, crow_ptr, col_ptr, val_ptr, bias_ptr, y_ptr, M, K, N,
                       stride_xm, stride_ym, M_BUCKET, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
                       PRECISION: tl.constexpr, B: tl.constexpr, BLOCK_M: tl.constexpr):
    pid_m = tl.program_id(0)
    rb = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    inner = tl.arange(0, B)
    row_ok = rows < M
    acc = tl.full((BLOCK_M, B), 0.0, tl.float32)  # not tl.zeros: a @jit helper the interpreter
    # refuses when triton was imported before TRITON_INTERPRET was set (torch.export imports it)
    start = tl.load(crow_ptr + rb)
    end = tl.load(crow_ptr + rb + 1)
    for j in range(start, end):
        cb = tl.load(col_ptr + j)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + (cb * B + inner)[None, :], mask=row_ok[:, None], other=0.0)
        w = tl.load(val_ptr + j * B * B + inner[:, None] * B + inner[None, :])
        if UPCAST:  # exact: every bf16 is an fp32, and the GPU accumulates in fp32 too
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc += tl.dot(x, w, input_precision=PRECISION, out_dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rb * B + inner).to(tl.float32)[None, :]
    out = y_ptr + rows[:, None] * stride_ym + (rb * B + inner)[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None])


_kernels: dict = {}


def _kernel(interpret: bool):
    """The jitted kernel; autotuned on a GPU, one configuration in the interpreter. Built when
    first asked for, so that TRITON_INTERPRET set by a test before the first call applies."""
    if interpret not in _kernels:
        jitted = triton.jit(_bsr_linear_kernel)
        _kernels[interpret] = jitted if interpret else triton.autotune(
            _CONFIGS, key=["M_BUCKET", "N", "K", "B"])(jitted)
    return _kernels[interpret]


def _interpreting() -> bool:
    return bool(triton.knobs.runtime.interpret)


def _bucket(m: int) -> int:
    """Autotune per power-of-two bucket of rows, not per exact M (token counts vary per call)."""
    return 1 << max(4, (m - 1).bit_length())


def bsr_linear_triton(x, crow, col, values, bias, out_features: int) -> torch.Tensor:
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"hwprune::bsr_linear on the GPU takes fp16, bf16 or fp32, not {x.dtype}")
    b = values.shape[-1]
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty((m, out_features), dtype=x.dtype, device=x.device)
    if values.shape[0] == 0 or m == 0:  # an all-zero weight: y is the bias (no launch needed)
        y.copy_(bias.to(x.dtype).expand_as(y) if bias is not None else torch.zeros((), dtype=x.dtype))
        return y.reshape(*x.shape[:-1], out_features)
    values = values.to(x.dtype).contiguous()
    bias_arg = bias.contiguous() if bias is not None else values  # never read without HAS_BIAS
    interpret = _interpreting()
    # fp32 follows torch's setting for matmuls (TF32 off by default), as F.linear does
    precision = "tf32" if x.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"
    args = (x2, crow, col, values, bias_arg, y, m, k, out_features, x2.stride(0), y.stride(0))
    if interpret:
        grid = (triton.cdiv(m, 16), out_features // b)
        _kernel(True)[grid](*args, _bucket(m), HAS_BIAS=bias is not None, UPCAST=x.dtype == torch.bfloat16,
                            PRECISION=precision, B=b, BLOCK_M=16)
    else:
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), out_features // b)  # noqa: E731
        _kernel(False)[grid](*args, _bucket(m), HAS_BIAS=bias is not None, UPCAST=False, PRECISION=precision, B=b)
    return y.reshape(*x.shape[:-1], out_features)
