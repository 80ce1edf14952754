"""Hybrid retrieval: reciprocal rank fusion of a lexical (BM25) and a dense ranking.

Fusion is reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum over rankings of
1 / (rrf_k + rank)`` with rank counted from 1 and ``rrf_k = 60``; ties go to the smaller id. A
document repeated within one ranking counts once, at its best rank. Pure Python, no torch or bm25s:
the rankings come from `embtune.eval.bm25.bm25_rankings` and `embtune.eval.retrieval.dense_rankings`
(or a FAISS index: embtune-faiss's hybrid rows use this same function).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

__all__ = ["RRF_K", "hybrid_rankings", "reciprocal_rank_fusion"]

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int | None = None,
                           rrf_k: int = RRF_K) -> list[str]:
    """Fuse several ranked id lists of ONE query into one: ids sorted by summed ``1/(rrf_k + rank)``
    (descending, ties by ascending id), cut to ``k`` (None: all). ``rrf_k`` must be >= 0."""
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    fused: dict[str, float] = defaultdict(float)
    for ranking in rankings:
        for rank, doc in enumerate(dict.fromkeys(ranking), start=1):
            fused[doc] += 1.0 / (rrf_k + rank)
    order = sorted(fused, key=lambda doc: (-fused[doc], doc))
    return order if k is None else order[:k]


def hybrid_rankings(dense: Mapping[str, Sequence[str]], lexical: Mapping[str, Sequence[str]],
                    k: int | None = None, rrf_k: int = RRF_K) -> dict[str, list[str]]:
    """Fuse two first stages query by query. In: query id → dense ranking, query id → lexical
    ranking (a query missing from ``lexical`` fuses with an empty list), the depth ``k`` to keep
    (None: all). Out: query id → `reciprocal_rank_fusion` of ``[dense, lexical]``, for every query
    id of ``dense``, in its order."""
    return {q: reciprocal_rank_fusion([docs, lexical.get(q, ())], k, rrf_k) for q, docs in dense.items()}
