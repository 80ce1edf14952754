"""A PEFT LoRA ``Linear`` with a cheaper forward/backward, installed through PEFT's own dispatch.

PEFT's ``lora.Linear.forward`` on a bf16 base with fp32 adapters computes the base output in bf16,
then casts the input to fp32, runs the two adapter matmuls in fp32, multiplies by ``scaling``, adds
(promoting the sum to fp32) and casts back: four full-size fp32 temporaries per layer and as many
again in autograd's backward. On CPU those passes cost about as much as the base matmul itself.

`FastLoraLinear` subclasses PEFT's layer (same parameters, state-dict names, merge/unmerge and
adapter files; the class is chosen with ``LoraConfig._register_custom_module``, PEFT's documented hook
for custom LoRA layers, so nothing in PEFT is patched) and replaces only the plain case of the
forward (one active adapter, unmerged, no dropout, no DoRA/variants, a dense base) with one autograd
function. ``compute`` picks its arithmetic:

* ``"bf16"`` (default): the adapter branch in the base's dtype (``embtune_kernels.lora_linear``: the
  reference on CPU, the fused Triton kernel on CUDA) with the adapter weights kept in fp32, like
  autocast: the fastest (on the 2-core benchmark machine ~20 % faster per MiniLM step than "exact")
  but rounded to bf16 (outputs differ from PEFT's in ~1-2 % of elements by one bf16 ulp, adapter
  gradients by ~3e-3 relative). SciFact quality after one epoch: README, Speed.
* ``"exact"``: PEFT's arithmetic, fp32 adapter branch on the low-precision base, with fewer
  passes (``embtune_kernels.lora_linear_exact``: the scaled low-rank product is added by one ``addmm``
  into the upcast base output, and the backward is written out by hand). Outputs and gradients are
  bit-identical to PEFT's.

Every mode's autograd node is the one ``embtune_kernels.lora_linear`` Function; this module defines none.
* ``"peft"``: PEFT's own forward.

Every other case (several adapters, dropout > 0, merged weights, ``adapter_names``) runs PEFT's
forward.
"""
from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from embtune.choices import LORA_COMPUTE_MODES as COMPUTE_MODES


def plain_adapter(layer: Any, kwargs: dict[str, Any]) -> str | None:
    """The name of ``layer``'s one active adapter when the plain case applies (see the module
    docstring: compute mode not "peft", one active adapter, unmerged, no dropout, no DoRA/variants,
    no extra forward arguments), else None. In: a PEFT LoRA layer and its forward's keyword arguments."""
    if layer.embtune_compute == "peft" or layer.disable_adapters or layer.merged or kwargs:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    if name in layer.lora_variant or layer.use_dora.get(name, False):
        return None
    dropout = layer.lora_dropout[name]
    if not isinstance(dropout, torch.nn.Identity) and not (dropout.p == 0 or not dropout.training):
        return None
    return name


class FastLoraLinear(PeftLoraLinear):
    """PEFT's LoRA Linear with a fused plain-case forward (see the module docstring).

    ``embtune_compute`` (instance attribute, default "bf16") is one of ``COMPUTE_MODES``.
    """

    embtune_compute: str = "bf16"

    def _fast_case(self, x: torch.Tensor, kwargs: dict[str, Any]) -> tuple | None:
        """(weight, bias, A, B, scaling) when the plain case applies, else None."""
        name = plain_adapter(self, kwargs)
        if name is None:
            return None
        base = self.get_base_layer()
        if type(base) is not torch.nn.Linear or base.weight.dtype != x.dtype:
            return None
        return base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """In: ``x [..., in]``. Out: ``[..., out]`` in the base layer's dtype (PEFT's result)."""
        case = None if args else self._fast_case(x, kwargs)
        if case is None:
            return super().forward(x, *args, **kwargs)
        weight, bias, lora_a, lora_b, scaling = case
        import embtune_kernels

        if self.embtune_compute == "bf16":
            return embtune_kernels.lora_linear(x, weight, lora_a, lora_b, bias, scaling)
        if lora_a.dtype == x.dtype:  # nothing to save over PEFT when the whole layer is one dtype
            return super().forward(x, *args, **kwargs)
        return embtune_kernels.lora_linear_exact(x, weight, lora_a, lora_b, bias, scaling)


def use_fast_lora(lora_config: Any) -> Any:
    """Make ``lora_config`` (a ``peft.LoraConfig``) build `FastLoraLinear` for dense ``nn.Linear`` targets.

    In/out: the config (changed in place). Quantised targets (bitsandbytes layers subclass
    ``nn.Linear``) are left to PEFT: `FastLoraLinear` falls back to PEFT's forward for any base that
    is not exactly ``nn.Linear``, so register it only for models without quantised layers.
    """
    lora_config._register_custom_module({torch.nn.Linear: FastLoraLinear})
    return lora_config


def set_lora_compute(model: torch.nn.Module, compute: str) -> int:
    """Set the arithmetic of every `FastLoraLinear` in ``model``; returns how many layers were set.

    ``compute`` is one of ``COMPUTE_MODES``.
    """
    if compute not in COMPUTE_MODES:
        raise ValueError(f"lora compute must be one of {COMPUTE_MODES}, got {compute!r}")
    count = 0
    for module in model.modules():
        if hasattr(module, "embtune_compute"):
            module.embtune_compute = compute
            count += 1
    return count
