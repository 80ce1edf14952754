"""Mean / CLS / last-token pooling over a packed (padding-free) batch, with optional L2 normalisation.

Public: :func:`pool`.
"""

from __future__ import annotations

import torch

from .. import dispatch
from .._util import check_cu_seqlens
from .reference import MODES

__all__ = ["MODES", "pool"]


def pool(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    mode: str = "mean",
    normalize: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Pool each sequence of a packed batch to one vector.

    In: ``hidden [total_tokens, H]``; ``cu_seqlens`` int32/int64 ``[B+1]`` cumulative lengths (``cu[0] = 0``,
    every sequence at least one token; same device as hidden); ``mode`` "mean" (average of the sequence's
    rows), "cls" (its first row) or "last" (its last row); ``normalize`` to L2-normalise
    (``p / max(||p||, eps)``).
    Out: ``[B, H]`` in ``hidden.dtype`` (pooling and normalisation computed in fp32); differentiable
    w.r.t. hidden.
    """
    if mode not in MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; expected one of {sorted(MODES)}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [total_tokens, H], got shape {tuple(hidden.shape)}")
    check_cu_seqlens(cu_seqlens)
    impl = dispatch.resolve(__name__, hidden, cu_seqlens)
    return impl.pool(hidden, cu_seqlens, mode, normalize, eps)
