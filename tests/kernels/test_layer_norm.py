"""layer_norm (+ residual add): reference vs float64 naive formula, Triton vs reference.

bf16 in Triton's interpreter: this kernel has no tl.dot; the bf16 cases check bf16 loads, the
rounded residual sum and bf16 stores. (The interpreter's fp32->bf16 cast truncates; see tolerances.py.)
"""

from __future__ import annotations

import pytest
import torch
from kernel_harness import check_triton_vs_reference, forward_backward, randn
from tolerances import assert_close

import embtune_kernels as ek
from embtune_kernels import use_backend

# (tokens from seqlens, hidden, residual, bias)
CASES = [
    (sum([1, 7, 13]), 48, True, True),
    (sum([3, 2]), 100, False, True),
    (7, 33, True, False),
]


def _inputs(t, h, residual, bias, dtype=torch.float32, seed=0):
    return dict(
        x=randn(t, h, seed=seed, scale=2.0, dtype=dtype) + 0.5,
        weight=randn(h, seed=seed + 1, dtype=dtype),
        bias=randn(h, seed=seed + 2, dtype=dtype) if bias else None,
        residual=randn(t, h, seed=seed + 3, dtype=dtype) if residual else None,
        eps=1e-5,
    )


def _diff(residual, bias):
    return ["x", "weight"] + (["bias"] if bias else []) + (["residual"] if residual else [])


def _naive_fp64(x, weight, bias, residual, eps):
    h = x if residual is None else x + residual
    mean = h.sum(-1, keepdim=True) / h.shape[-1]
    var = ((h - mean) ** 2).sum(-1, keepdim=True) / h.shape[-1]
    y = (h - mean) / torch.sqrt(var + eps) * weight
    return (y if bias is None else y + bias), h


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_fp64_naive(case):
    inputs, diff = _inputs(*case), _diff(*case[2:])
    with use_backend("torch"):
        outs, grads = forward_backward(ek.layer_norm, inputs, diff, seed=5)
    as64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    ref_outs, ref_grads = forward_backward(_naive_fp64, as64, diff, seed=5)
    for name, o, r in zip(("y", "h"), outs, ref_outs):
        assert_close(o, r, "reference_vs_fp64", torch.float32, name)
    for k in diff:
        assert_close(grads[k], ref_grads[k], "reference_vs_fp64", torch.float32, f"grad[{k}]")


def test_reference_gradcheck():
    small = _inputs(3, 6, True, True)
    inputs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in small.items()}
    names = ("x", "weight", "bias", "residual")
    leaves = [inputs[k].detach().requires_grad_() for k in names]
    with use_backend("torch"):
        assert torch.autograd.gradcheck(lambda x, w, b, r: ek.layer_norm(x, w, b, r, 1e-5), leaves)


def test_residual_none_returns_input_as_sum():
    x = randn(4, 8, seed=1)
    with use_backend("torch"):
        _, h = ek.layer_norm(x, torch.ones(8))
    assert h is x


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(case, dtype):
    inputs = _inputs(*case, dtype=dtype, seed=9)
    check_triton_vs_reference(ek.layer_norm, inputs, _diff(*case[2:]), dtype, seed=2)


@pytest.mark.usefixtures("needs_triton")
def test_triton_only_y_used():
    """The returned sum unused downstream (its gradient is None inside the Function)."""
    inputs = _inputs(21, 48, True, True, seed=13)

    def only_y(**kw):
        return ek.layer_norm(**kw)[0]

    check_triton_vs_reference(only_y, inputs, _diff(True, True), torch.float32)


@pytest.mark.gpu
def test_gpu_realistic_shape():
    """BERT-large-like rows on CUDA in bf16 with fp32 affine parameters."""
    inputs = _inputs(8192 + 5, 1024, True, True, dtype=torch.bfloat16, seed=17)
    inputs["weight"], inputs["bias"] = inputs["weight"].float(), inputs["bias"].float()
    check_triton_vs_reference(ek.layer_norm, inputs, _diff(True, True), torch.bfloat16)
