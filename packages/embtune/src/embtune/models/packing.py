"""Padded batch <-> packed token stream.

A tokenised batch is ``[B, L]`` with an attention mask; its real tokens, taken row by row, form the
packed stream ``[1, T]`` (``T`` = number of real tokens) with ``cu_seqlens`` marking where each text
starts. Position ids restart at every text (plus the model's offset: RoBERTa-family embeddings count
from ``padding_idx + 1``), so every text sees the positions it would see alone, right-padded.
:func:`unpack` scatters per-token outputs back into the padded layout (zeros at padding), so the
modules after the transformer (ST Pooling, Normalize, ...) see the features they always see.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    """A padded batch flattened to its real tokens.

    ``input_ids``/``position_ids``/``token_type_ids``: ``[1, T]`` (``token_type_ids`` None when the
    batch had none); ``cu_seqlens``: int32 ``[B+1]``; ``lengths``: tokens per text; ``max_len``:
    the longest text; ``index``: ``[T]`` positions of the real tokens in the flattened ``[B * L]``
    padded layout; ``shape``: ``(B, L)`` of the padded batch.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    token_type_ids: torch.Tensor | None
    cu_seqlens: torch.Tensor
    lengths: list[int]
    max_len: int
    index: torch.Tensor
    shape: tuple[int, int]


def contiguous_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Tokens per row of a ``[B, L]`` 0/1 mask whose ones form one run at the right or left end.

    Returns the ``[B]`` lengths, or None if some row is empty or its real tokens are not one run
    touching an end of the row (right padding for encoders, left padding for decoders).
    """
    if attention_mask.ndim != 2 or attention_mask.numel() == 0:
        return None
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        return None
    width = mask.shape[1]
    positions = torch.arange(width, device=mask.device)
    right = positions[None, :] < lengths[:, None]
    left = positions[None, :] >= (width - lengths)[:, None]
    if not bool(((mask == right) | (mask == left)).all(dim=1).all()):
        return None
    return lengths


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
         position_offset: int = 0) -> PackedBatch | None:
    """Pack a padded batch.

    In: ``input_ids [B, L]``, ``attention_mask [B, L]`` (0/1; per row one run of ones at the right
    or left end), optional ``token_type_ids [B, L]``, and the position id of a text's first token
    (``position_offset``: 0, or ``padding_idx + 1`` for RoBERTa-family embeddings).
    Out: a PackedBatch, or None when the mask is not of that form (the caller keeps the padded path).
    """
    lengths = contiguous_lengths(attention_mask)
    if lengths is None:
        return None
    batch, width = attention_mask.shape
    flat_mask = attention_mask.reshape(-1).bool()
    index = flat_mask.nonzero().squeeze(1)
    cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32, device=attention_mask.device)
    cu_seqlens[1:] = lengths.cumsum(0)
    length_list = [int(n) for n in lengths.tolist()]
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths)
    position_ids = torch.arange(index.numel(), device=index.device) - starts + position_offset
    tt = None if token_type_ids is None else token_type_ids.reshape(-1)[index].unsqueeze(0)
    return PackedBatch(input_ids=input_ids.reshape(-1)[index].unsqueeze(0), position_ids=position_ids.unsqueeze(0),
                       token_type_ids=tt, cu_seqlens=cu_seqlens, lengths=length_list, max_len=max(length_list),
                       index=index, shape=(batch, width))


def unpack(hidden: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
    """Scatter per-token outputs back to the padded layout.

    In: ``hidden [1, T, H]`` (or ``[T, H]``) for the packed stream. Out: ``[B, L, H]`` with zeros at
    padding positions; differentiable (the backward is a gather).
    """
    tokens = hidden.reshape(-1, hidden.shape[-1])
    batch, width = packed.shape
    out = tokens.new_zeros(batch * width, tokens.shape[-1]).index_copy(0, packed.index, tokens)
    return out.view(batch, width, -1)
