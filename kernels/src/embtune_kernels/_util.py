"""Small helpers shared by the ops; pure Python / PyTorch (no triton import here)."""

from __future__ import annotations

import torch


def next_power_of_2(n: int) -> int:
    """Return the smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def block_size(n: int, lo: int, hi: int) -> int:
    """Return next_power_of_2(n) clamped to [lo, hi] (a tile edge for a dimension of size n)."""
    return max(lo, min(hi, next_power_of_2(n)))


def check_cu_seqlens(cu_seqlens: torch.Tensor) -> None:
    """Raise ValueError unless cu_seqlens is a 1-D integer tensor of B+1 offsets with B >= 1.

    Only shape and dtype are checked (reading the values would sync a GPU); the values must be
    non-decreasing, start at 0 and end at <= the number of tokens, and every sequence must
    have at least one token (cls/last pooling read row cu[b] / cu[b+1]-1).
    """
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with B+1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
