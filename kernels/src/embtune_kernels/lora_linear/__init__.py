"""LoRA linear on a packed token stream: ``y = x @ W^T + bias + scaling * (x @ A^T) @ B^T``.

Public: :func:`lora_linear` (dense frozen W, fp32/bf16/fp16) and :func:`lora_linear_nf4` (W as a
bitsandbytes NF4 weight, wrapped in :class:`NF4Weight`), both through ``embtune_kernels.dispatch``;
:func:`lora_linear_exact` (PEFT's fp32-adapter rounding, PyTorch only). All three run the one autograd
Function :class:`.function.LoRALinearFunction`, each with its backend's arithmetic.
"""

from __future__ import annotations

import torch

from .. import dispatch
from .exact import lora_linear_exact
from .nf4 import NF4Weight, dequantize_nf4

__all__ = ["NF4Weight", "dequantize_nf4", "lora_linear", "lora_linear_exact", "lora_linear_nf4"]


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """LoRA linear with a dense frozen base weight.

    In: ``x [..., in]`` (usually packed ``[total_tokens, in]``); ``weight [out, in]`` (frozen: no gradient);
    ``lora_a [r, in]``; ``lora_b [out, r]``; ``bias [out]`` or None; ``scaling`` (alpha / r).
    Out: ``y [..., out]`` in ``x.dtype``; gradients flow to x, lora_a, lora_b and bias.
    """
    impl = dispatch.resolve(__name__, x, weight, lora_a, lora_b, bias)
    return impl.lora_linear(x, weight, lora_a, lora_b, bias, scaling)


def lora_linear_nf4(
    x: torch.Tensor,
    weight: NF4Weight,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    scaling: float = 1.0,
) -> torch.Tensor:
    """LoRA linear with an NF4 (QLoRA) base weight.

    In: as :func:`lora_linear`, but ``weight`` is an :class:`NF4Weight` (build one with
    ``NF4Weight.from_bnb(params4bit.data, params4bit.quant_state)``). Out: ``y [..., out]`` in ``x.dtype``.
    The reference path dequantizes the whole weight; the Triton path decodes nibbles inside its GEMM.
    """
    impl = dispatch.resolve(__name__, x, weight.packed, lora_a, lora_b, bias)
    return impl.lora_linear_nf4(x, weight, lora_a, lora_b, bias, scaling)
