"""Mean / CLS / last-token pooling over a packed (padding-free) batch, with optional L2 normalisation.

Public: :func:`pool` (packed: ``cu_seqlens``) and :func:`pool_spans` (any row runs, e.g. a padded batch).
"""

from __future__ import annotations

import torch

from .. import dispatch
from .._util import check_cu_seqlens
from .reference import MODES

__all__ = ["MODES", "pool", "pool_spans"]


def _check(hidden: torch.Tensor, mode: str, rows: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; expected one of {sorted(MODES)}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [{rows}, H], got shape {tuple(hidden.shape)}")


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
    _check(hidden, mode, "total_tokens")
    check_cu_seqlens(cu_seqlens)
    impl = dispatch.resolve(__name__, hidden, cu_seqlens)
    return impl.pool(hidden, cu_seqlens, mode, normalize, eps)


def pool_spans(
    hidden: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    mode: str = "mean",
    normalize: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Pool runs of rows that need not touch each other (a padded ``[B, L, H]`` batch seen as ``[B * L, H]``).

    In: ``hidden [R, H]``; ``starts``, ``ends`` int32/int64 ``[B]`` on hidden's device: sequence ``b`` is
    rows ``starts[b]:ends[b]`` (at least one row; rows outside every run are ignored and get zero
    gradient); ``mode``, ``normalize``, ``eps`` as in :func:`pool`.
    Out: ``[B, H]`` in ``hidden.dtype``; differentiable w.r.t. hidden.
    """
    _check(hidden, mode, "rows")
    if starts.dim() != 1 or starts.shape != ends.shape or starts.numel() == 0:
        raise ValueError(f"starts and ends must be 1-D of the same length B >= 1, got {tuple(starts.shape)}, "
                         f"{tuple(ends.shape)}")
    impl = dispatch.resolve(__name__, hidden, starts, ends)
    return impl.pool_spans(hidden, starts, ends, mode, normalize, eps)
