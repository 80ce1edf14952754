"""LoRA linear in plain PyTorch: the CPU path at run time and the oracle for the Triton kernels.

``y = x @ W^T + bias + scaling * (x @ A^T) @ B^T`` on a packed token stream ``x [T, in]`` (any
leading shape works). The base weight ``W`` is frozen (no gradient, in both backends); ``x``, ``A``,
``B`` and ``bias`` get gradients. Everything is computed in ``x.dtype``: ``W``, ``A``, ``B`` and
``bias`` are cast to it (as autocast would), and their gradients come back in their own dtypes.

The forward and backward are written out (one autograd node instead of five: the shared
:class:`.function.LoRALinearFunction`, with this module's arithmetic ``TORCH_OPS``): the low-rank product
is accumulated into the base output by ``addmm_`` and the two input-gradient terms into one buffer,
which saves four full ``[T, out]`` / ``[T, in]`` passes per layer over autograd's version (the
bf16 results round once instead of at every intermediate). ``tests/kernels/test_lora_linear.py``
checks it against a float64 einsum version.
"""

from __future__ import annotations

import torch

from .function import apply
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
    return apply(x, weight.detach(), lora_a, lora_b, bias, scaling, TORCH_OPS)


def _dense(weight: torch.Tensor | NF4Weight, dtype: torch.dtype) -> torch.Tensor:
    """The frozen base weight as a dense ``[out, in]`` tensor in ``dtype`` (NF4: dequantized as
    bitsandbytes does, to the weight's own dtype, then cast)."""
    if isinstance(weight, NF4Weight):
        return dequantize(weight).to(dtype)
    return weight.to(dtype)


class _TorchOps:
    """The reference arithmetic for :class:`..function.LoRALinearFunction` (see the module docstring).
    An NF4 base weight is dequantized in the forward and again in the backward, never kept dense
    between them (as bitsandbytes does)."""

    contiguous_input = False

    @staticmethod
    def forward(x2, weight, lora_a, lora_b, bias, scaling):
        """x2 ``[T, in]`` -> (y2 ``[T, out]``, xa ``[T, r]``, A and B in x's dtype, dense W / None for NF4)."""
        dt = x2.dtype
        w, a, b = _dense(weight, dt), lora_a.to(dt), lora_b.to(dt)
        xa = x2 @ a.t()
        y = torch.addmm(bias.to(dt), x2, w.t()) if bias is not None else x2 @ w.t()
        y.addmm_(xa, b.t(), alpha=scaling)
        return y, xa, a, b, None if isinstance(weight, NF4Weight) else w

    @staticmethod
    def backward(g2, x2, weight, a, b, xa, scaling, needs):
        """g2 ``[T, out]`` -> (dx2, dA, dB, dbias) in x's dtype; entries not in ``needs`` are None."""
        need_x, need_a, need_b, need_bias = needs
        g = g2.to(x2.dtype)
        g_xa = (g @ b).mul_(scaling)  # [T, r]: gradient of x @ A^T
        grad_x = grad_a = grad_b = grad_bias = None
        if need_x:
            grad_x = (g @ _dense(weight, x2.dtype)).addmm_(g_xa, a)
        if need_a:
            grad_a = g_xa.t() @ x2
        if need_b:
            grad_b = torch.mm(g.t(), xa).mul_(scaling)
        if need_bias:
            grad_bias = g.sum(0)
        return grad_x, grad_a, grad_b, grad_bias


TORCH_OPS = _TorchOps()


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
    return apply(x, weight, lora_a, lora_b, bias, scaling, TORCH_OPS)
