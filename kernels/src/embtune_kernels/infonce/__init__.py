"""InfoNCE / multiple-negatives ranking loss over pooled embeddings. Public: :func:`info_nce`."""

from __future__ import annotations

import torch

from .. import dispatch

__all__ = ["info_nce"]


def info_nce(q: torch.Tensor, d: torch.Tensor, scale: float = 20.0, symmetric: bool = False) -> torch.Tensor:
    """Mean InfoNCE cross-entropy of anchors against candidates.

    In: ``q [B, D]`` anchor embeddings; ``d [N, D]`` candidates with ``N >= B`` (typically
    ``N = B * (1 + hard_negatives)``), where ``d[i]`` is the positive of ``q[i]`` for ``i < B`` and every
    other row is a negative for every anchor; ``scale`` = 1 / temperature (20 = sentence-transformers'
    default); ``symmetric`` adds the positive-to-anchor direction (each ``d[i], i < B`` against all of
    ``q``) and averages the two, like MultipleNegativesSymmetricRankingLoss.
    Out: scalar fp32 loss ``mean_i(logsumexp_j(scale * q_i . d_j) - scale * q_i . d_i)``, differentiable
    w.r.t. q and d. Embeddings are used as given (normalise them first for cosine similarity). The Triton
    path never materialises the ``[B, N]`` logits (online softmax over N tiles).
    """
    if q.dim() != 2 or d.dim() != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"q must be [B, D] and d [N, D], got {tuple(q.shape)} and {tuple(d.shape)}")
    if d.shape[0] < q.shape[0] or q.shape[0] == 0:
        raise ValueError(f"need 1 <= B <= N (d[i] is q[i]'s positive), got B={q.shape[0]}, N={d.shape[0]}")
    impl = dispatch.resolve(__name__, q, d)
    loss = impl.info_nce(q, d, scale)
    if symmetric:
        loss = 0.5 * (loss + impl.info_nce(d[: q.shape[0]], q, scale))
    return loss
