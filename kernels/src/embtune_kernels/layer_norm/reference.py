"""LayerNorm with an optional residual add, in plain PyTorch (CPU path and test oracle).

``h = x + residual`` (in ``x.dtype``, rounded like any PyTorch add), ``y = LN(h) * weight + bias``
computed in fp32 (fp64 stays fp64) and cast back to ``x.dtype``. ``h`` is returned too: it is the
next residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTERPRETED = False  # dispatch reads this on every backend module; only meaningful for triton.py


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[..., H]``, weight ``[H]``, bias ``[H]`` or None, residual like x or None -> (y, h), both like x.

    ``h = x + residual`` (``x`` itself when residual is None);
    ``y = (h - mean) / sqrt(var + eps) * weight + bias``.
    """
    h = x if residual is None else x + residual.to(x.dtype)
    acc = torch.promote_types(x.dtype, torch.float32)
    b = None if bias is None else bias.to(acc)
    y = F.layer_norm(h.to(acc), (h.shape[-1],), weight.to(acc), b, eps)
    return y.to(x.dtype), h
