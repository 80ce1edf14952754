"""Sequence pooling from a packed token stream, in plain PyTorch (CPU path and test oracle).

Sequence ``b`` owns rows ``cu_seqlens[b] : cu_seqlens[b+1]`` of ``hidden [T, H]`` (:func:`pool`), or
rows ``starts[b] : ends[b]`` (:func:`pool_spans`: runs with gaps between them, e.g. a padded batch).
Pooling is done in fp32 (fp64 stays fp64); the optional L2 normalisation is ``F.normalize``
(``p / max(||p||, eps)``); the result is cast back to ``hidden.dtype``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTERPRETED = False  # dispatch reads this on every backend module; only meaningful for triton.py
MODES = {"mean": 0, "cls": 1, "last": 2}


def pool(
    hidden: torch.Tensor,
    cu_seqlens: torch.Tensor,
    mode: str = "mean",
    normalize: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """hidden ``[T, H]``, cu_seqlens int ``[B+1]`` (starts at 0, every sequence non-empty), mode
    "mean" | "cls" | "last", normalize, eps -> pooled ``[B, H]`` in ``hidden.dtype``."""
    cu = cu_seqlens.to(device=hidden.device, dtype=torch.long)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    n_seq = cu.numel() - 1
    if mode == "mean":
        # segment id of every token; tokens at or past cu[-1] land in an extra bucket that is dropped
        token = torch.arange(hidden.shape[0], device=hidden.device)
        seg = torch.searchsorted(cu[1:], token, right=True)
        sums = hidden.new_zeros(n_seq + 1, hidden.shape[1], dtype=acc)
        sums = sums.index_add(0, seg, hidden.to(acc))[:n_seq]
        pooled = sums / (cu[1:] - cu[:-1]).clamp(min=1).unsqueeze(1)
    elif mode == "cls":
        pooled = hidden[cu[:-1]].to(acc)
    elif mode == "last":
        pooled = hidden[cu[1:] - 1].to(acc)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}; expected one of {sorted(MODES)}")
    if normalize:
        pooled = F.normalize(pooled, dim=-1, eps=eps)
    return pooled.to(hidden.dtype)


def pool_spans(
    hidden: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    mode: str = "mean",
    normalize: bool = False,
    eps: float = 1e-12,
) -> torch.Tensor:
    """hidden ``[R, H]``, starts / ends int ``[B]`` (sequence ``b`` = rows ``starts[b]:ends[b]``, non-empty;
    rows outside every span are ignored), mode "mean" | "cls" | "last", normalize, eps -> pooled
    ``[B, H]`` in ``hidden.dtype`` (fp32 arithmetic, as :func:`pool`)."""
    starts = starts.to(device=hidden.device, dtype=torch.long)
    ends = ends.to(device=hidden.device, dtype=torch.long)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    lengths = ends - starts
    if mode == "mean":
        seg = torch.repeat_interleave(torch.arange(starts.numel(), device=hidden.device), lengths)
        first_of_seg = (torch.cumsum(lengths, 0) - lengths)[seg]
        rows = starts[seg] + torch.arange(seg.numel(), device=hidden.device) - first_of_seg
        sums = hidden.new_zeros(starts.numel(), hidden.shape[1], dtype=acc)
        sums = sums.index_add(0, seg, hidden[rows].to(acc))
        pooled = sums / lengths.clamp(min=1).unsqueeze(1)
    elif mode == "cls":
        pooled = hidden[starts].to(acc)
    elif mode == "last":
        pooled = hidden[ends - 1].to(acc)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}; expected one of {sorted(MODES)}")
    if normalize:
        pooled = F.normalize(pooled, dim=-1, eps=eps)
    return pooled.to(hidden.dtype)
