"""QLoRA's LoRA layer on the fast path: PEFT's bitsandbytes ``Linear4bit`` LoRA layer whose plain case
runs ``embtune_kernels.lora_linear_nf4``.

PEFT's 4-bit LoRA forward runs the base through bitsandbytes, clones the result, casts the input to
the adapter's fp32 for the two adapter matmuls and adds: with a bf16 residual stream every LoRA layer
keeps its own fp32 copy of its input for the backward (q, k and v three copies of the same
activation). `FastLoraLinear4bit` computes ``y = x @ dequant(W)^T + bias + scaling * (x @ A^T) @ B^T``
in the input's dtype with fp32 adapter weights (the "bf16" compute mode of `embtune.models.fast_lora`):
the PyTorch reference on CPU (dequantizing through bitsandbytes, in the forward and again in the
backward, like bitsandbytes' own matmul) and the fused NF4 Triton kernel on CUDA. Modes "exact" and
"peft", and every non-plain case (several adapters, dropout, merged, DoRA), run PEFT's forward.

Registered with ``LoraConfig._register_custom_module`` (PEFT's hook for custom layers); the class
subclasses PEFT's, so parameters, state-dict names, merging and adapter files are PEFT's own.
"""
from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.bnb import Linear4bit as PeftLoraLinear4bit

from embtune.models.fast_lora import plain_adapter


class FastLoraLinear4bit(PeftLoraLinear4bit):
    """PEFT's 4-bit LoRA layer with the fused plain-case forward (see the module docstring).

    ``embtune_compute`` (instance attribute, default "bf16") is one of
    ``embtune.models.fast_lora.COMPUTE_MODES``; only "bf16" takes the fused path.
    """

    embtune_compute: str = "bf16"

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """In: ``x [..., in]``. Out: ``[..., out]`` in ``x.dtype`` (what PEFT's layer returns)."""
        name = None if args or self.embtune_compute != "bf16" else plain_adapter(self, kwargs)
        weight = self.get_base_layer().weight
        state = getattr(weight, "quant_state", None)
        if (name is None or state is None or state.quant_type != "nf4" or len(state.shape) != 2
                or getattr(state, "packing_format_for_cpu", False) or not x.is_floating_point()):
            return super().forward(x, *args, **kwargs)
        import embtune_kernels
        from embtune_kernels import NF4Weight

        return embtune_kernels.lora_linear_nf4(
            x, NF4Weight.from_bnb(weight.data, state), self.lora_A[name].weight, self.lora_B[name].weight,
            self.get_base_layer().bias, self.scaling[name])


__all__ = ["FastLoraLinear4bit"]


def use_fast_lora_4bit(lora_config: Any) -> Any:
    """Make ``lora_config`` build `FastLoraLinear4bit` for bitsandbytes ``Linear4bit`` targets (QLoRA).
    In/out: the config (changed in place). Needs bitsandbytes."""
    import bitsandbytes as bnb

    lora_config._register_custom_module({bnb.nn.Linear4bit: FastLoraLinear4bit})
    return lora_config
