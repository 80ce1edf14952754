"""PEFT's LoRA arithmetic (fp32 adapter branch on a low-precision base), with fewer passes.

``y = cast(base(x).to(A.dtype) + s * (x.to(A.dtype) @ A^T) @ B^T)`` where ``base(x) = x W^T + bias``
runs in the base's dtype: what ``peft.tuners.lora.Linear.forward`` computes for fp32 adapters on a
bf16/fp16 base, bit for bit, but the scaled low-rank product is added by one ``addmm`` into the
upcast base output and the backward is written out by hand (PEFT's autograd keeps four full-size
fp32 temporaries per layer). PyTorch only, on any device (no Triton twin: the point is PEFT's exact
rounding). Used by ``embtune.models.fast_lora``'s "exact" compute mode through :func:`lora_linear_exact`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .function import apply


class _ExactOps:
    """PEFT's arithmetic for :class:`.function.LoRALinearFunction` (see the module docstring)."""

    contiguous_input = False

    @staticmethod
    def forward(x2, weight, lora_a, lora_b, bias, scaling):
        """x2 ``[T, in]`` -> (y2 in the base's dtype, xa in A's dtype, A, B, W)."""
        base = F.linear(x2, weight, bias)
        xa = x2.to(lora_a.dtype) @ lora_a.t()
        out = torch.addmm(base.to(lora_a.dtype), xa, lora_b.t(), alpha=scaling)
        return out.to(base.dtype), xa, lora_a, lora_b, weight

    @staticmethod
    def backward(g2, x2, weight, lora_a, lora_b, xa, scaling, needs):
        """g2 ``[T, out]`` -> (dx2 in g's dtype, dA, dB in the adapter dtype, dbias in g's dtype).

        As PEFT's autograd: ``d(lora_out) = s * G`` in the adapter dtype, then the two adapter matmuls.
        """
        need_x, need_a, need_b, need_bias = needs
        grad_lora = g2.to(lora_a.dtype) * scaling
        grad_xa = grad_lora @ lora_b
        grad_b = grad_lora.t() @ xa if need_b else None
        grad_a = grad_xa.t() @ x2.to(lora_a.dtype) if need_a else None
        grad_x = None
        if need_x:
            grad_x = (g2 @ weight.to(g2.dtype)) + (grad_xa @ lora_a).to(g2.dtype)
        grad_bias = g2.sum(0) if need_bias else None
        return grad_x, grad_a, grad_b, grad_bias


EXACT_OPS = _ExactOps()


def lora_linear_exact(
    x: torch.Tensor,
    weight: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """LoRA linear with PEFT's rounding: outputs and gradients bit-identical to PEFT's ``lora.Linear``.

    In: ``x [..., in]`` and ``weight [out, in]`` (frozen) in the base's dtype; ``lora_a [r, in]``,
    ``lora_b [out, r]`` in the adapter's dtype (usually fp32); ``bias [out]`` or None; ``scaling``.
    Out: ``y [..., out]`` in the base output's dtype; gradients flow to x, lora_a, lora_b and bias.
    """
    return apply(x, weight.detach(), lora_a, lora_b, bias, scaling, EXACT_OPS)
