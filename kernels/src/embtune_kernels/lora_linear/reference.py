"""LoRA linear in plain PyTorch: the CPU path at run time and the oracle for the Triton kernels.

``y = x @ W^T + bias + scaling * (x @ A^T) @ B^T`` on a packed token stream ``x [T, in]`` (any
leading shape works). The base weight ``W`` is frozen (detached here, so both backends agree that
it gets no gradient); ``x``, ``A``, ``B`` and ``bias`` get gradients through autograd. Everything is
computed in ``x.dtype``: ``W``, ``A``, ``B`` and ``bias`` are cast to it (as autocast would), and their
gradients come back in their own dtypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    dt = x.dtype
    y = F.linear(x, weight.detach().to(dt), None if bias is None else bias.to(dt))
    return y + scaling * F.linear(F.linear(x, lora_a.to(dt)), lora_b.to(dt))


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
    ``x.dtype``.
    """
    return lora_linear(x, dequantize(weight).to(x.dtype), lora_a, lora_b, bias, scaling)
