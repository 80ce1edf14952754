"""info_nce: reference vs a float64 per-anchor loop, Triton (online softmax) vs reference.

bf16 in Triton's interpreter: the kernels upcast their dot operands to fp32 (constexpr UPCAST_DOTS, on
only when interpreted); the bf16 cases check bf16 loads and gradient stores, and the bf16 tensor-core
dots are checked when this file runs on a CUDA machine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_harness import check_triton_vs_reference, forward_backward, randn
from tolerances import assert_close

import embtune_kernels as ek
from embtune_kernels import use_backend

# (B anchors, hard negatives per anchor, D): N = B * (1 + hard negatives)
CASES = [(3, 2, 48), (5, 0, 100), (37, 1, 20)]


def _inputs(b, hard, dim, scale=20.0, symmetric=False, dtype=torch.float32, seed=0):
    q = F.normalize(randn(b, dim, seed=seed), dim=-1)
    d = F.normalize(randn(b * (1 + hard), dim, seed=seed + 1), dim=-1)
    d[:b] = F.normalize(d[:b] + 0.5 * q, dim=-1)  # positives resemble their anchors (loss stays O(1))
    return dict(q=q.to(dtype), d=d.to(dtype), scale=scale, symmetric=symmetric)


def _naive_fp64(q, d, scale, symmetric):
    def one_way(a, c):
        losses = []
        for i in range(a.shape[0]):
            e = torch.exp(scale * (c @ a[i]))
            losses.append(-torch.log(e[i] / e.sum()))
        return torch.stack(losses).mean()

    loss = one_way(q, d)
    return 0.5 * (loss + one_way(d[: q.shape[0]], q)) if symmetric else loss


@pytest.mark.parametrize("symmetric", [False, True], ids=["one_way", "symmetric"])
@pytest.mark.parametrize("case", CASES)
def test_reference_matches_fp64_naive(case, symmetric):
    inputs = _inputs(*case, symmetric=symmetric)
    with use_backend("torch"):
        outs, grads = forward_backward(ek.info_nce, inputs, ["q", "d"], seed=2)
    as64 = {**inputs, "q": inputs["q"].double(), "d": inputs["d"].double()}
    ref_outs, ref_grads = forward_backward(_naive_fp64, as64, ["q", "d"], seed=2)
    assert_close(outs[0], ref_outs[0], "reference_vs_fp64", torch.float32, "loss")
    for k in ("q", "d"):
        assert_close(grads[k], ref_grads[k], "reference_vs_fp64", torch.float32, f"grad[{k}]")


def test_reference_gradcheck():
    inputs = _inputs(3, 1, 4, scale=3.0, symmetric=True)
    q, d = (inputs[k].double().requires_grad_() for k in ("q", "d"))
    with use_backend("torch"):
        assert torch.autograd.gradcheck(lambda q, d: ek.info_nce(q, d, 3.0, symmetric=True), (q, d))


def test_rejects_fewer_candidates_than_anchors():
    with pytest.raises(ValueError, match="B <= N"):
        ek.info_nce(randn(4, 8, seed=0), randn(3, 8, seed=1))


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(case, dtype):
    check_triton_vs_reference(ek.info_nce, _inputs(*case, dtype=dtype, seed=10), ["q", "d"], dtype, seed=1)


@pytest.mark.usefixtures("needs_triton")
def test_triton_symmetric_and_large_scale():
    """Symmetric flag, and scale 50 (temperature 0.02) where an unstabilised softmax would overflow."""
    inputs = _inputs(37, 1, 20, scale=50.0, symmetric=True, seed=3)
    check_triton_vs_reference(ek.info_nce, inputs, ["q", "d"], torch.float32)


@pytest.mark.gpu
def test_gpu_never_materialises_logits():
    """B=4096, N=32768: fp32 logits would take 512 MiB; the Triton forward+backward stays far below."""
    inputs = _inputs(4096, 7, 768, dtype=torch.bfloat16, seed=4)
    q, d = inputs["q"].requires_grad_(), inputs["d"].requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = ek.info_nce(q, d)
    loss.backward()
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < 128 * 2**20
    assert torch.isfinite(loss) and q.grad is not None and d.grad is not None


@pytest.mark.gpu
def test_gpu_realistic_shape():
    inputs = _inputs(256, 3, 768, dtype=torch.bfloat16, seed=6)
    check_triton_vs_reference(ek.info_nce, inputs, ["q", "d"], torch.bfloat16)
