"""Lexical BM25 rankings and reciprocal rank fusion with dense rankings, re-exported from the core.

BM25 is the core's ``embtune.eval.bm25.bm25_rankings`` (bm25s' Lucene variant, k1=1.5, b=0.75, over
lower-cased word tokens with English stop words removed, no stemming; documents scoring 0 are not
ranked), the same ranking the from-corpus report's BM25 row uses. Fusion is the core's
``embtune.eval.hybrid.reciprocal_rank_fusion`` (``score(d) = sum over rankings of 1 / (rrf_k + rank)``
with rank counted from 1 and ``rrf_k = 60``; ties go to the smaller id), the one the core's
``embtune eval --reranker`` hybrid row uses. This module only checks that bm25s is installed.
"""
from __future__ import annotations

from embtune.eval.bm25 import available, bm25_rankings
from embtune.eval.hybrid import RRF_K, reciprocal_rank_fusion

if not available():  # pragma: no cover - depends on the environment
    raise ImportError("hybrid search needs bm25s: pip install bm25s")

__all__ = ["RRF_K", "bm25_rankings", "reciprocal_rank_fusion"]
