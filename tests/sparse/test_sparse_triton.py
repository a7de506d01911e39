"""The Triton kernel of hwprune::bsr_linear against the dense masked reference: in Triton's
interpreter on the CPU (TRITON_INTERPRET=1), and on a CUDA GPU where one is (-m gpu)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_util import random_bsr

triton = pytest.importorskip("triton")

# relative to max|reference|: fp32 accumulation order; fp16 and bf16 output rounding
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def _check(m, n, k, block, density, dtype, bias, seed, device):
    from hwprune.sparse.triton_bsr import bsr_linear_triton

    weight, crow, col, values = random_bsr(n, k, block, density, seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    got = bsr_linear_triton(*(t.to(device) if t is not None else None for t in (x, crow, col, values, b)), n)
    want = torch.nn.functional.linear(x.double(), weight.double(), None if b is None else b.double())
    err = (got.cpu().double() - want).abs().max().item() if want.numel() else 0.0
    assert got.dtype == dtype and got.shape == want.shape
    assert err <= TOLERANCE[dtype] * max(want.abs().max().item(), 1.0), (err, dtype)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 40), n_blocks=st.integers(1, 3), k_blocks=st.integers(1, 3),
       block=st.sampled_from([16, 32, 64]), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_triton_kernel_matches_dense_masked_reference(m, n_blocks, k_blocks, block, density, dtype, bias, seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _check(m, n_blocks * block, k_blocks * block, block, density, dtype, bias, seed, device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block", [16, 32, 64])
def test_triton_kernel_every_block_and_dtype(block, dtype):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _check(33, 2 * block, 3 * block, block, 0.5, dtype, True, seed=block, device=device)


@pytest.mark.gpu
@cuda
def test_op_dispatches_cuda_tensors_to_triton():
    from hwprune.sparse import ops
    weight, crow, col, values = random_bsr(128, 256, 32, 0.3, seed=2, dtype=torch.float16)
    x = torch.randn(64, 256, dtype=torch.float16, device="cuda")
    assert ops.kernel_for(x.device, x.dtype) == "triton"
    got = torch.ops.hwprune.bsr_linear(x, crow.cuda(), col.cuda(), values.cuda(), None, 128)
    torch.testing.assert_close(got, torch.nn.functional.linear(x, weight.cuda()), rtol=2e-3, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="2:4 semi-structured sparsity needs an sm80+ GPU")
def test_two_four_runs_semi_structured_on_sm80():
    from hwprune.sparse import sparsify
    from hwprune.sparse.semi_structured import to_semi_structured
    model = torch.nn.Sequential(torch.nn.Linear(256, 128)).half().cuda().eval()
    x = torch.randn(64, 256, dtype=torch.float16, device="cuda")
    sparse, _ = sparsify(model, (x,), pattern="2:4", rtol=1e-2)
    fast = to_semi_structured(sparse)
    torch.testing.assert_close(fast(x), sparse(x), rtol=1e-2, atol=1e-2)
