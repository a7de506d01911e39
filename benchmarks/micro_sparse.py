"""Micro-benchmarks of hwprune::bsr_linear's native CPU kernel against dense F.linear, MiniLM's
linear shapes at 128 tokens, fp32, block 32, torch 1 thread.

    pytest benchmarks/micro_sparse.py --benchmark-only --benchmark-group-by=param:shape,param:sparsity

bench_sparse.py is the study (interleaved rounds, all shapes, JSON); this file is for quick
before/after comparisons of a kernel change with pytest-benchmark's --benchmark-compare.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench_sparse import BLOCK, TOKENS, block_sparse_weight
from hwprune.sparse import native
from hwprune.sparse.bsr import to_bsr

SHAPES = {"384x384": (384, 384), "384x1536": (384, 1536), "1536x384": (1536, 384)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    if not native.status().loaded:
        pytest.skip(f"native kernel not built: {native.status().why_not}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kernel", ["dense", "native_bsr"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_linear(benchmark, shape, sparsity, kernel):
    in_f, out_f = SHAPES[shape]
    weight = block_sparse_weight(out_f, in_f, BLOCK, sparsity, seed=0)
    crow, col, values = to_bsr(weight, BLOCK)
    x = torch.randn(TOKENS, in_f)
    fn = (lambda: F.linear(x, weight)) if kernel == "dense" else (
        lambda: torch.ops.hwprune_native.bsr_linear(x, crow, col, values, None, out_f))
    with torch.inference_mode():
        y = benchmark(fn)
    torch.testing.assert_close(y, F.linear(x, weight), rtol=1e-4, atol=1e-3)
