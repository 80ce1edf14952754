"""Fused residual-add + LayerNorm on a packed token stream. Public: :func:`layer_norm`."""

from __future__ import annotations

import torch

from .. import dispatch

__all__ = ["layer_norm"]


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = LayerNorm(x + residual)``, also returning the sum for the next residual connection.

    In: ``x [..., H]`` (usually packed ``[total_tokens, H]``), ``weight [H]``, ``bias [H]`` or None,
    ``residual`` shaped like ``x`` or None, ``eps``.
    Out: ``(y, h)``, both shaped like ``x`` in ``x.dtype``: ``h = x + residual`` (``x`` itself when
    residual is None) and ``y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias`` (statistics in fp32).
    Gradients flow to x, residual, weight and bias, and into ``h`` if it is used downstream.
    """
    impl = dispatch.resolve(__name__, x, weight, bias, residual)
    return impl.layer_norm(x, weight, bias, residual, eps)
