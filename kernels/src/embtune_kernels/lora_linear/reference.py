"""LoRA linear in plain PyTorch: the CPU path at run time and the oracle for the Triton kernels.

``y = x @ W^T + bias + scaling * (x @ A^T) @ B^T`` on a packed token stream ``x [T, in]`` (any
leading shape works). The base weight ``W`` is frozen (no gradient, in both backends); ``x``, ``A``,
``B`` and ``bias`` get gradients. Everything is computed in ``x.dtype``: ``W``, ``A``, ``B`` and
``bias`` are cast to it (as autocast would), and their gradients come back in their own dtypes.

The forward and backward are written out (one autograd node instead of five): the low-rank product
is accumulated into the base output by ``addmm_`` and the two input-gradient terms into one buffer,
which saves four full ``[T, out]`` / ``[T, in]`` passes per layer over autograd's version (the
bf16 results round once instead of at every intermediate). ``tests/kernels/test_lora_linear.py``
checks it against a float64 einsum version.
"""

from __future__ import annotations

import torch

from .nf4 import NF4Weight, dequantize

INTERPRETED = False  # dispatch reads this on every backend module; only meaningful for triton.py


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """x ``[..., in]``, weight ``[out, in]`` (frozen), lora_a ``[r, in]``, lora_b ``[out, r]``, bias ``[out]``
    or None, scaling float -> y ``[..., out]`` in ``x.dtype``."""
    return _LoraLinear.apply(x, weight.detach(), lora_a, lora_b, bias, scaling)


def _dense(weight: torch.Tensor | NF4Weight, dtype: torch.dtype) -> torch.Tensor:
    """The frozen base weight as a dense ``[out, in]`` tensor in ``dtype`` (NF4: dequantized as
    bitsandbytes does, to the weight's own dtype, then cast)."""
    if isinstance(weight, NF4Weight):
        return dequantize(weight).to(dtype)
    return weight.to(dtype)


class _LoraLinear(torch.autograd.Function):
    """The reference forward/backward (see the module docstring). An NF4 base weight is dequantized
    in the forward and again in the backward, never kept dense between them (as bitsandbytes does)."""

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, bias, scaling):
        dt = x.dtype
        x2 = x.reshape(-1, x.shape[-1])
        w, a, b = _dense(weight, dt), lora_a.to(dt), lora_b.to(dt)
        xa = x2 @ a.t()
        y = torch.addmm(bias.to(dt), x2, w.t()) if bias is not None else x2 @ w.t()
        y.addmm_(xa, b.t(), alpha=scaling)
        ctx.nf4 = weight if isinstance(weight, NF4Weight) else None
        ctx.save_for_backward(x2, a, b, xa, *(() if ctx.nf4 is not None else (w,)))
        ctx.scaling, ctx.x_shape, ctx.has_bias = scaling, x.shape, bias is not None
        ctx.dtypes = (lora_a.dtype, lora_b.dtype, None if bias is None else bias.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, a, b, xa, *dense = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1]).to(x2.dtype)
        g_xa = (g @ b).mul_(ctx.scaling)  # [T, r]: gradient of x @ A^T
        grad_x = grad_a = grad_b = grad_bias = None
        if ctx.needs_input_grad[0]:
            w = dense[0] if dense else _dense(ctx.nf4, x2.dtype)
            grad_x = (g @ w).addmm_(g_xa, a).view(ctx.x_shape)
        if ctx.needs_input_grad[2]:
            grad_a = (g_xa.t() @ x2).to(ctx.dtypes[0])
        if ctx.needs_input_grad[3]:
            grad_b = torch.mm(g.t(), xa).mul_(ctx.scaling).to(ctx.dtypes[1])
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_bias = g.sum(0).to(ctx.dtypes[2])
        return grad_x, None, grad_a, grad_b, grad_bias, None


def lora_linear_nf4(
    x: torch.Tensor,
    weight: NF4Weight,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """Same as :func:`lora_linear` with the base weight given as NF4 (see :class:`NF4Weight`).

    The weight is dequantized to its own ``weight.dtype`` (what bitsandbytes returns), then cast to
    ``x.dtype``; the backward dequantizes it again instead of keeping the dense copy.
    """
    return _LoraLinear.apply(x, weight, lora_a, lora_b, bias, scaling)
