"""hwprune::bsr_linear on the CPU: the native kernel as CMake built it, against the dense
masked reference (F.linear with the zeroed weight); the op in torch.export and .pt2 files."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwprune.sparse import BSRConv1x1, BSRLinear, native, ops
from sparse_util import random_bsr

NATIVE = native.status()
needs_native = pytest.mark.skipif(not NATIVE.loaded, reason=f"native kernel not built: {NATIVE.why_not}")


def test_native_kernel_is_the_one_that_runs_when_required():
    """.ci/run sets HWPRUNE_REQUIRE_NATIVE=1: there the built kernel, not the fallback, must run."""
    print(f"native kernel: loaded={NATIVE.loaded} path={NATIVE.path} why_not={NATIVE.why_not}")
    if os.environ.get("HWPRUNE_REQUIRE_NATIVE") == "1":
        assert NATIVE.loaded, NATIVE.why_not
        assert ops.kernel_for("cpu", torch.float32) == "native"
        assert hasattr(torch.ops.hwprune_native, "bsr_linear")


def test_without_cmake_the_op_falls_back_to_the_reference_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path))  # nothing built there
    monkeypatch.delenv("HWPRUNE_REQUIRE_NATIVE", raising=False)
    monkeypatch.setattr(native, "_status", None)
    monkeypatch.setattr(native, "_tool", lambda name: None)
    with pytest.warns(RuntimeWarning, match="native BSR kernel is unavailable .cmake is not on PATH.*PyTorch reference"):
        assert not native.load().loaded
    assert ops.kernel_for("cpu", torch.float32) == "reference"
    weight, crow, col, values = random_bsr(32, 48, 16, 0.5, seed=4)
    x = torch.randn(3, 48)
    torch.testing.assert_close(torch.ops.hwprune.bsr_linear(x, crow, col, values, None, 32),
                               torch.nn.functional.linear(x, weight), rtol=1e-5, atol=1e-5)
    assert not list(tmp_path.rglob("*.so"))


def test_without_cmake_required_native_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path))
    monkeypatch.setenv("HWPRUNE_REQUIRE_NATIVE", "1")
    monkeypatch.setattr(native, "_status", None)
    monkeypatch.setattr(native, "_tool", lambda name: None)
    with pytest.raises(native.NativeBuildError, match="HWPRUNE_REQUIRE_NATIVE=1 but the native kernel is unavailable"):
        native.load()


@needs_native
@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 70), n_blocks=st.integers(1, 4), k_blocks=st.integers(1, 4), block=st.sampled_from([16, 32, 64]),
       density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_native_kernel_matches_dense_masked_reference(m, n_blocks, k_blocks, block, density, bias, seed):
    n, k = n_blocks * block, k_blocks * block
    weight, crow, col, values = random_bsr(n, k, block, density, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    got = torch.ops.hwprune_native.bsr_linear(x, crow, col, values, b, n)
    want = torch.nn.functional.linear(x, weight, b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


@needs_native
def test_native_kernel_takes_batched_and_strided_inputs():
    weight, crow, col, values = random_bsr(64, 96, 32, 0.5, seed=3)
    x = torch.randn(3, 96, 5).transpose(1, 2)  # (3, 5, 96), not contiguous
    got = torch.ops.hwprune_native.bsr_linear(x, crow, col, values, None, 64)
    torch.testing.assert_close(got, torch.nn.functional.linear(x, weight), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_op_on_cpu_matches_reference_for_every_dtype(dtype):
    """fp32 goes to the native kernel where built; other dtypes to the reference."""
    weight, crow, col, values = random_bsr(48, 32, 16, 0.6, seed=5, dtype=dtype)
    x = torch.randn(7, 32).to(dtype)
    got = torch.ops.hwprune.bsr_linear(x, crow, col, values, None, 48)
    want = torch.nn.functional.linear(x, weight)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_dense_weight_round_trips_through_bsr():
    weight, crow, col, values = random_bsr(64, 128, 32, 0.4, seed=9)
    assert torch.equal(ops.dense_weight(crow, col, values, 64, 128), weight)
    assert values.shape[0] == int(weight.reshape(2, 32, 4, 32).ne(0).any(3).any(1).sum())


@pytest.mark.parametrize("stride", [1, 2])
def test_bsr_conv1x1_equals_the_conv(stride):
    conv = torch.nn.Conv2d(32, 48, 1, stride=stride)
    with torch.no_grad():
        conv.weight[:16, 16:] = 0
    module = BSRConv1x1.from_conv(conv, 16)
    x = torch.randn(2, 32, 9, 9)
    torch.testing.assert_close(module(x), conv(x), rtol=1e-5, atol=1e-5)


def _model():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight[:, :32] = 0
    return torch.nn.Sequential(BSRLinear.from_linear(linear, 16), torch.nn.ReLU()).eval(), linear


def test_export_keeps_the_op_as_one_node_and_pt2_round_trips(tmp_path):
    model, linear = _model()
    x = torch.randn(5, 64)
    program = torch.export.export(model, (x,), strict=False)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.hwprune.bsr_linear.default) == 1
    assert not {torch.ops.aten.linear.default, torch.ops.aten.addmm.default, torch.ops.aten.mm.default} & set(targets)
    torch.export.save(program, tmp_path / "m.pt2")
    reloaded = torch.export.load(tmp_path / "m.pt2").module()
    x2 = torch.randn(5, 64)
    torch.testing.assert_close(reloaded(x2), torch.relu(linear(x2)), rtol=1e-5, atol=1e-5)


def test_fake_implementation_gives_the_output_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode
    _, crow, col, values = random_bsr(48, 32, 16, 0.5, seed=1)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        x = mode.from_tensor(torch.randn(2, 3, 32))
        out = torch.ops.hwprune.bsr_linear(x, crow, col, values, None, 48)
    assert out.shape == (2, 3, 48)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_the_dense_masked_reference(dtype):
    """Training a sparse model (recovery) needs d/dx, d/dvalues and d/dbias of the op: they must
    equal autograd through F.linear with the dense weight built from the same blocks."""
    _, crow, col, values = random_bsr(48, 64, 16, 0.6, seed=7, dtype=dtype)
    grads = []
    for use_op in (True, False):
        torch.manual_seed(0)
        v = values.clone().requires_grad_(True)
        b = torch.randn(48, dtype=dtype, requires_grad=True)
        x = torch.randn(2, 5, 64, dtype=dtype, requires_grad=True)
        y = (torch.ops.hwprune.bsr_linear(x, crow, col, v, b, 48) if use_op
             else torch.nn.functional.linear(x, ops.dense_weight(crow, col, v, 48, 64), b))
        (y * torch.linspace(-1, 1, 48, dtype=dtype)).sum().backward()
        grads.append((x.grad, v.grad, b.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
