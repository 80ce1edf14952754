"""lora_linear / lora_linear_nf4: reference vs float64, NF4 dequant vs bitsandbytes, Triton vs reference.

bf16 in Triton's interpreter: the kernels upcast their dot operands to fp32 (constexpr UPCAST_DOTS, on
only when interpreted), so the bf16 cases here check bf16 loads, NF4 decoding to bf16 and bf16 stores;
the bf16 tensor-core dots themselves are checked when this file runs on a CUDA machine.
"""

from __future__ import annotations

import math

import pytest
import torch
from kernel_harness import DEVICE, check_triton_vs_reference, forward_backward, randn
from tolerances import assert_close

import embtune_kernels as ek
from embtune_kernels import NF4Weight, dequantize_nf4, use_backend
from embtune_kernels.lora_linear.nf4 import NF4_CODE_VALUES

# (tokens from seqlens, in_features, out_features, rank, bias, scaling)
CASES = [
    (sum([1, 7, 13]), 48, 40, 8, True, 0.5),
    (5, 100, 7, 3, False, 2.0),
]


def _inputs(t, k, n, r, bias, scaling, dtype=torch.float32, lora_dtype=None, seed=0):
    lora_dtype = lora_dtype or dtype
    return dict(
        x=randn(t, k, seed=seed, dtype=dtype),
        weight=randn(n, k, seed=seed + 1, scale=k**-0.5, dtype=dtype),
        lora_a=randn(r, k, seed=seed + 2, scale=k**-0.5, dtype=lora_dtype),
        lora_b=randn(n, r, seed=seed + 3, dtype=lora_dtype),
        bias=randn(n, seed=seed + 4, dtype=dtype) if bias else None,
        scaling=scaling,
    )


def _naive_fp64(x, weight, lora_a, lora_b, bias, scaling):
    xa = torch.einsum("ti,ri->tr", x, lora_a)
    y = torch.einsum("ti,oi->to", x, weight) + scaling * torch.einsum("tr,or->to", xa, lora_b)
    return y if bias is None else y + bias


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_fp64_naive(case):
    inputs = _inputs(*case)
    diff = ["x", "lora_a", "lora_b"] + (["bias"] if case[4] else [])
    with use_backend("torch"):
        outs, grads = forward_backward(ek.lora_linear, inputs, diff, seed=7)
    as64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    ref_outs, ref_grads = forward_backward(_naive_fp64, as64, diff, seed=7)
    assert_close(outs[0], ref_outs[0], "reference_vs_fp64", torch.float32, "y")
    for k in diff:
        assert_close(grads[k], ref_grads[k], "reference_vs_fp64", torch.float32, f"grad[{k}]")


def test_reference_gradcheck_and_frozen_weight():
    small = _inputs(4, 5, 3, 2, True, 0.7)
    inputs = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in small.items()}
    diff = ("x", "lora_a", "lora_b", "bias")
    leaves = [inputs[k].detach().requires_grad_() for k in diff]

    def fn(x, a, b, bias):
        return ek.lora_linear(x, inputs["weight"], a, b, bias, 0.7)

    with use_backend("torch"):
        assert torch.autograd.gradcheck(fn, leaves)
        weight = inputs["weight"].detach().requires_grad_()
        y = ek.lora_linear(leaves[0], weight, *leaves[1:], scaling=0.7)
        assert torch.autograd.grad(y.sum(), weight, allow_unused=True)[0] is None  # W is frozen


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(case, dtype):
    diff = ["x", "lora_a", "lora_b"] + (["bias"] if case[4] else [])
    check_triton_vs_reference(ek.lora_linear, _inputs(*case, dtype=dtype, seed=11), diff, dtype, seed=3)


@pytest.mark.usefixtures("needs_triton")
def test_triton_mixed_dtypes_bf16_base_fp32_adapters():
    """A bf16 base model with fp32 LoRA parameters: grads of A and B come back in fp32."""
    inputs = _inputs(21, 48, 40, 8, True, 0.5, dtype=torch.bfloat16, lora_dtype=torch.float32, seed=21)
    check_triton_vs_reference(ek.lora_linear, inputs, ["x", "lora_a", "lora_b", "bias"], torch.bfloat16)


# ---------------------------------------------------------------- NF4


def _synthetic_nf4(out_f, in_f, dtype, nested, seed, blocksize=64):
    """Random NF4 bytes and scales in bitsandbytes' layout (no bitsandbytes needed)."""
    g = torch.Generator().manual_seed(seed)
    n = out_f * in_f
    n_blocks = math.ceil(n / blocksize)
    packed = torch.randint(0, 256, ((n + 1) // 2, 1), generator=g, dtype=torch.uint8)
    common = dict(shape=(out_f, in_f), blocksize=blocksize, dtype=dtype)
    if not nested:
        absmax = torch.rand(n_blocks, generator=g) + 0.1
        return NF4Weight(packed.to(DEVICE), absmax.to(DEVICE), **common)
    code = torch.sort(torch.rand(256, generator=g) * 2 - 1).values
    return NF4Weight(
        packed.to(DEVICE),
        torch.randint(0, 256, (n_blocks,), generator=g, dtype=torch.uint8).to(DEVICE),
        nested_absmax=(torch.rand(math.ceil(n_blocks / 256), generator=g) + 0.5).to(DEVICE),
        nested_code=code.to(DEVICE),
        offset=torch.tensor(0.75),
        **common,
    )


def test_dequantize_nf4_handmade_layout():
    """Nibble order (high first), blocks straddling rows, partial last block, double quantization."""
    code = torch.tensor(NF4_CODE_VALUES, dtype=torch.float64)
    nibbles = [7, 15, 0, 8, 3, 12]  # weight [2, 3], blocksize 4 -> blocks {0..3}, {4, 5}
    packed = torch.tensor([(7 << 4) | 15, (0 << 4) | 8, (3 << 4) | 12], dtype=torch.uint8)
    absmax = torch.tensor([2.0, 0.5])
    expected = torch.tensor([code[v] * absmax[i // 4] for i, v in enumerate(nibbles)]).reshape(2, 3)
    plain = NF4Weight(packed, absmax, shape=(2, 3), blocksize=4)
    assert torch.equal(dequantize_nf4(plain).double(), expected.float().double())
    # double quantization: absmax = code2[q] * nested_absmax + offset = [0.25 * 4 + 1, -0.5 * 4 + 1]
    nested = NF4Weight(
        packed, torch.tensor([1, 2], dtype=torch.uint8), shape=(2, 3), blocksize=4,
        nested_absmax=torch.tensor([4.0]), nested_code=torch.tensor([0.0, 0.25, -0.5, 1.0]), offset=1.0,
    )  # fmt: skip
    scales = torch.tensor([2.0, -1.0], dtype=torch.float64)
    expected = torch.tensor([code[v] * scales[i // 4] for i, v in enumerate(nibbles)]).reshape(2, 3)
    assert torch.equal(dequantize_nf4(nested).double(), expected.float().double())


@pytest.mark.parametrize("nested", [False, True], ids=["plain", "double_quant"])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"]
)
def test_dequantize_nf4_matches_bitsandbytes(dtype, nested):
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    # (128, 192): 384 blocks -> two nested blocks of 256; all in_features multiples of 64, where the
    # native CPU kernel of bitsandbytes 0.50.2 is consistent with its quantizer (see nf4.dequantize)
    for shape in [(5, 64), (7, 192), (128, 192)]:
        w = randn(*shape, seed=sum(shape), dtype=dtype).cpu()
        packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=nested)
        ours = dequantize_nf4(NF4Weight.from_bnb(packed, state))
        assert ours.dtype == dtype
        assert_close(ours, bnb_f.dequantize_4bit(packed, state), "nf4_vs_bitsandbytes", dtype, f"W{shape}")


@pytest.mark.parametrize("shape", [(3, 100), (5, 48), (1, 7)])
def test_dequantize_nf4_inverts_bitsandbytes_quantizer_on_odd_shapes(shape):
    """Where scale blocks straddle rows: |dequant(quant(W)) - W| <= half the widest NF4 gap * block absmax."""
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    w = randn(*shape, seed=5, scale=3.0).cpu()
    packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4")
    back = dequantize_nf4(NF4Weight.from_bnb(packed, state))
    half_gap = max(b - a for a, b in zip(NF4_CODE_VALUES, NF4_CODE_VALUES[1:])) / 2
    block_absmax = state.absmax[torch.arange(w.numel()) // 64].reshape(shape)
    assert ((back - w).abs() <= half_gap * block_absmax + 1e-6).all()


@pytest.mark.usefixtures("needs_triton")
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "double_quant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_triton_nf4_matches_reference(dtype, nested):
    weight = _synthetic_nf4(40, 100, dtype, nested, seed=31)  # 4000 weights: blocks straddle rows
    inputs = _inputs(21, 100, 40, 5, True, 0.5, dtype=dtype, seed=41)
    inputs["weight"] = weight
    check_triton_vs_reference(ek.lora_linear_nf4, inputs, ["x", "lora_a", "lora_b", "bias"], dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("nf4", [False, True], ids=["dense", "nf4"])
def test_gpu_auto_dispatch_realistic_shape(nf4):
    """BERT-base-like projection on CUDA: auto picks Triton (bf16 tensor cores), matches the reference."""
    bf16, fp32 = torch.bfloat16, torch.float32
    inputs = _inputs(4096 + 77, 768, 768, 16, True, 2.0, dtype=bf16, lora_dtype=fp32, seed=51)
    fn = ek.lora_linear
    if nf4:
        bnb_f = pytest.importorskip("bitsandbytes.functional")
        packed, state = bnb_f.quantize_4bit(inputs["weight"], quant_type="nf4", compress_statistics=True)
        inputs["weight"], fn = NF4Weight.from_bnb(packed, state), ek.lora_linear_nf4
    from embtune_kernels import dispatch

    assert dispatch.choose(inputs["x"], inputs["lora_a"]) == "triton"
    check_triton_vs_reference(fn, inputs, ["x", "lora_a", "lora_b", "bias"], torch.bfloat16)
