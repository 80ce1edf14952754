"""The one autograd Function of LoRA linear, shared by every backend.

``y = x @ W^T + bias + s * (x @ A^T) @ B^T`` with ``W`` frozen. :class:`LoRALinearFunction` owns the
autograd protocol: flattening ``x`` to ``[T, in]``, what is saved, ``needs_input_grad``, the shapes of
the returned gradients and their dtypes (each gradient comes back in its parameter's dtype). The
arithmetic comes from an *ops* object handed to ``apply``, which has

* ``contiguous_input`` (bool): whether the flattened ``x`` must be made contiguous first;
* ``forward(x2, weight, lora_a, lora_b, bias, scaling) -> (y2, xa, a_saved, b_saved, w_saved)``:
  ``y2 [T, out]``; ``xa = x2 @ A^T`` as the backend keeps it; the A, B (and dense W) tensors the
  backward needs, in whatever dtype the backend wants them; ``w_saved`` None means "keep ``weight``
  itself" (an NF4 weight: never held dense between forward and backward);
* ``backward(g2, x2, weight, a_saved, b_saved, xa, scaling, needs) -> (dx2, da, db, dbias)`` with
  ``needs = (x, A, B, bias)`` flags; unneeded entries may be None.

Backends: ``reference.TORCH_OPS`` (PyTorch, everything in ``x.dtype``), ``triton.TRITON_OPS`` (the
fused GEMM kernel) and ``exact.EXACT_OPS`` (PEFT's fp32-adapter arithmetic, used by
``embtune.models.fast_lora``'s "exact" mode).

Derivation, with ``G = dL/dy [T, out]`` and ``u = x A^T [T, r]``: ``dL/dB = s G^T u``,
``du = s G B``, ``dL/dA = du^T x``, ``dL/dx = G W + du A``, ``dL/dbias = sum_t G``; ``dL/dW`` is not
computed (W is frozen).
"""

from __future__ import annotations

import torch


class LoRALinearFunction(torch.autograd.Function):
    """``apply(x, weight, lora_a, lora_b, bias, scaling, ops)`` -> ``y [..., out]`` (see the module doc).

    In: ``x [..., in]``; ``weight``: the frozen base (a dense ``[out, in]`` tensor, or an NF4 object the
    ops understand); ``lora_a [r, in]``; ``lora_b [out, r]``; ``bias [out]`` or None; ``scaling`` float;
    ``ops`` a backend ops object. Gradients flow to x, lora_a, lora_b and bias, never to weight.
    """

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, bias, scaling, ops):
        x2 = x.reshape(-1, x.shape[-1])
        if ops.contiguous_input:
            x2 = x2.contiguous()
        y2, xa, a_saved, b_saved, w_saved = ops.forward(x2, weight, lora_a, lora_b, bias, scaling)
        ctx.save_for_backward(x2, a_saved, b_saved, xa, w_saved)
        ctx.weight = weight if w_saved is None else None
        ctx.ops, ctx.scaling, ctx.x_shape = ops, scaling, x.shape
        ctx.dtypes = (lora_a.dtype, lora_b.dtype, None if bias is None else bias.dtype)
        return y2.view(*x.shape[:-1], y2.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, a_saved, b_saved, xa, w_saved = ctx.saved_tensors
        weight = w_saved if w_saved is not None else ctx.weight
        need = ctx.needs_input_grad
        needs = (need[0], need[2], need[3], need[4] and ctx.dtypes[2] is not None)
        g2 = grad.reshape(-1, grad.shape[-1])
        dx, da, db, dbias = ctx.ops.backward(g2, x2, weight, a_saved, b_saved, xa, ctx.scaling, needs)
        dx = dx.view(ctx.x_shape) if needs[0] else None
        da = da.to(ctx.dtypes[0]) if needs[1] else None
        db = db.to(ctx.dtypes[1]) if needs[2] else None
        dbias = dbias.to(ctx.dtypes[2]) if needs[3] else None
        return dx, None, da, db, dbias, None, None


def apply(x, weight, lora_a, lora_b, bias, scaling, ops) -> torch.Tensor:
    """Run :class:`LoRALinearFunction` with backend ``ops``. In/out as its docstring; ``scaling`` is
    converted to a Python float."""
    return LoRALinearFunction.apply(x, weight, lora_a, lora_b, bias, float(scaling), ops)
