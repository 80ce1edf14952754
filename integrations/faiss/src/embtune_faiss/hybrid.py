"""Lexical BM25 rankings and reciprocal rank fusion with dense rankings.

BM25 is the core's ``embtune.eval.bm25.bm25_rankings`` (bm25s' Lucene variant, k1=1.5, b=0.75, over
lower-cased word tokens with English stop words removed, no stemming; documents scoring 0 are not
ranked), the same ranking the from-corpus report's BM25 row uses; re-exported here. Fusion is
reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum over rankings of 1 / (rrf_k + rank)`` with rank counted
from 1 and ``rrf_k = 60``; ties go to the smaller id.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from embtune.eval.bm25 import available, bm25_rankings

if not available():  # pragma: no cover - depends on the environment
    raise ImportError("hybrid search needs bm25s: pip install bm25s")

__all__ = ["RRF_K", "bm25_rankings", "reciprocal_rank_fusion"]

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
