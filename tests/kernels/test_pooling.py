"""pool (mean / cls / last over cu_seqlens, optional L2 normalise): reference vs float64 loops,
Triton vs reference.

bf16 in Triton's interpreter: these kernels have no tl.dot; the bf16 cases check bf16 loads/stores.
"""

from __future__ import annotations

import pytest
import torch
from kernel_harness import DEVICE, check_triton_vs_reference, forward_backward, randn
from tolerances import assert_close

import embtune_kernels as ek
from embtune_kernels import use_backend

MODES = ["mean", "cls", "last"]
# (seqlens, extra rows after the last sequence, hidden)
CASES = [([1, 7, 13], 0, 48), ([5, 1, 2, 19], 2, 100)]


def _inputs(seqlens, extra, h, mode, normalize, dtype=torch.float32, seed=0):
    cu = torch.tensor([0] + list(torch.tensor(seqlens).cumsum(0)), dtype=torch.int32, device=DEVICE)
    t = sum(seqlens) + extra
    hidden = randn(t, h, seed=seed, dtype=dtype) + 0.3
    return dict(hidden=hidden, cu_seqlens=cu, mode=mode, normalize=normalize)


def _naive_fp64(hidden, cu_seqlens, mode, normalize):
    cu = cu_seqlens.tolist()
    rows = []
    for start, end in zip(cu[:-1], cu[1:]):
        seq = hidden[start:end]
        p = {"mean": seq.sum(0) / (end - start), "cls": seq[0], "last": seq[-1]}[mode]
        rows.append(p / torch.clamp(torch.sqrt((p * p).sum()), min=1e-12) if normalize else p)
    return torch.stack(rows)


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "l2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_reference_matches_fp64_naive(case, mode, normalize):
    inputs = _inputs(*case, mode, normalize)
    with use_backend("torch"):
        outs, grads = forward_backward(ek.pool, inputs, ["hidden"], seed=4)
    as64 = {**inputs, "hidden": inputs["hidden"].double()}
    ref_outs, ref_grads = forward_backward(_naive_fp64, as64, ["hidden"], seed=4)
    assert_close(outs[0], ref_outs[0], "reference_vs_fp64", torch.float32, "pooled")
    assert_close(grads["hidden"], ref_grads["hidden"], "reference_vs_fp64", torch.float32, "grad[hidden]")


@pytest.mark.parametrize("mode", MODES)
def test_reference_gradcheck(mode):
    inputs = _inputs([2, 1, 3], 1, 5, mode, True)
    hidden = inputs.pop("hidden").double().requires_grad_()
    with use_backend("torch"):
        assert torch.autograd.gradcheck(lambda h: ek.pool(h, **inputs), (hidden,))


def test_rejects_bad_arguments():
    hidden = randn(4, 3, seed=0)
    with pytest.raises(ValueError, match="mode"):
        ek.pool(hidden, torch.tensor([0, 4], device=DEVICE), mode="max")
    with pytest.raises(ValueError, match="cu_seqlens"):
        ek.pool(hidden, torch.tensor([[0, 4]], device=DEVICE))


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "l2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(case, mode, normalize, dtype):
    inputs = _inputs(*case, mode, normalize, dtype=dtype, seed=8)
    check_triton_vs_reference(ek.pool, inputs, ["hidden"], dtype, seed=6)


@pytest.mark.usefixtures("needs_triton")
def test_triton_zero_vector_normalisation():
    """A pooled vector of norm <= eps takes the flat branch of the clamp (dp = dy / eps), like F.normalize."""
    inputs = _inputs([2, 3], 0, 16, "cls", True, seed=1)
    inputs["hidden"][0] = 0.0
    inputs["eps"] = 1e-3
    check_triton_vs_reference(ek.pool, inputs, ["hidden"], torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_gpu_realistic_shape(mode):
    seqlens = [int(n) for n in torch.randint(1, 512, (64,), generator=torch.Generator().manual_seed(3))]
    inputs = _inputs(seqlens, 0, 1024, mode, True, dtype=torch.bfloat16, seed=12)
    check_triton_vs_reference(ek.pool, inputs, ["hidden"], torch.bfloat16)


# ---------------------------------------------------------------- pool_spans (row runs with gaps)
# (per-sequence (first row, length) inside its own padded block of L rows, L, hidden): right, left and
# full rows, like a padded [B, L, H] batch seen as [B * L, H]
SPAN_CASES = [([(0, 3), (4, 5), (0, 9), (8, 1)], 9, 48), ([(0, 1), (2, 5)], 7, 100)]


def _span_inputs(spans, width, h, mode, normalize, dtype=torch.float32, seed=0):
    starts = torch.tensor([b * width + first for b, (first, _) in enumerate(spans)], device=DEVICE)
    ends = starts + torch.tensor([n for _, n in spans], device=DEVICE)
    hidden = randn(len(spans) * width, h, seed=seed, dtype=dtype) + 0.3
    return dict(hidden=hidden, starts=starts, ends=ends, mode=mode, normalize=normalize)


def _naive_spans_fp64(hidden, starts, ends, mode, normalize):
    cu_rows = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        cu_rows.append(_naive_fp64(hidden[start:end], torch.tensor([0, end - start]), mode, normalize))
    return torch.cat(cu_rows)


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "l2"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", SPAN_CASES)
def test_spans_reference_matches_fp64_naive(case, mode, normalize):
    inputs = _span_inputs(*case, mode, normalize)
    with use_backend("torch"):
        outs, grads = forward_backward(ek.pool_spans, inputs, ["hidden"], seed=4)
    as64 = {**inputs, "hidden": inputs["hidden"].double()}
    ref_outs, ref_grads = forward_backward(_naive_spans_fp64, as64, ["hidden"], seed=4)
    assert_close(outs[0], ref_outs[0], "reference_vs_fp64", torch.float32, "pooled")
    assert_close(grads["hidden"], ref_grads["hidden"], "reference_vs_fp64", torch.float32, "grad[hidden]")


def test_spans_rows_outside_every_run_get_no_gradient():
    inputs = _span_inputs(*SPAN_CASES[0], "mean", False)
    with use_backend("torch"):
        _, grads = forward_backward(ek.pool_spans, inputs, ["hidden"], seed=4)
    inside = torch.zeros(grads["hidden"].shape[0], dtype=torch.bool)
    for start, end in zip(inputs["starts"].tolist(), inputs["ends"].tolist()):
        inside[start:end] = True
    assert grads["hidden"][~inside.to(DEVICE)].abs().max() == 0
    assert (grads["hidden"][inside.to(DEVICE)].abs().sum(1) > 0).all()


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", SPAN_CASES)
def test_spans_triton_matches_reference(case, mode, dtype):
    inputs = _span_inputs(*case, mode, mode == "mean", dtype=dtype, seed=8)
    check_triton_vs_reference(ek.pool_spans, inputs, ["hidden"], dtype, seed=6)
