"""Lexical BM25 rankings (bm25s) and reciprocal rank fusion with dense rankings.

Choices: BM25 is bm25s' Lucene variant (k1=1.5, b=0.75) over lower-cased word tokens with English
stop words removed and no stemming; query words that are not in the corpus vocabulary are ignored
and documents scoring 0 (no shared word) are not ranked. Fusion is reciprocal rank fusion
(Cormack et al., 2009): ``score(d) = sum over rankings of 1 / (rrf_k + rank)`` with rank counted
from 1 and ``rrf_k = 60``; ties go to the smaller id.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

try:
    import bm25s
    from bm25s.tokenization import Tokenizer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("hybrid search needs bm25s: pip install bm25s") from exc

RRF_K = 60


def bm25_rankings(doc_texts: Sequence[str], doc_ids: Sequence[str], query_texts: Sequence[str],
                  k: int, stopwords: str | None = "en") -> list[list[str]]:
    """BM25 top-``k`` document ids of each query, best first (documents scoring 0 left out).

    ``doc_texts[i]`` is the text of ``doc_ids[i]``. Returns one list per query in ``query_texts``
    order. ValueError for mismatched lengths or k < 1.
    """
    if len(doc_texts) != len(doc_ids):
        raise ValueError(f"{len(doc_texts)} document texts but {len(doc_ids)} ids")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not query_texts:
        return []
    if not doc_texts:
        return [[] for _ in query_texts]
    tokenizer = Tokenizer(stopwords=stopwords)
    corpus_tokens = tokenizer.tokenize(list(doc_texts), update_vocab=True, return_as="ids",
                                       show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = tokenizer.tokenize(list(query_texts), update_vocab=False, return_as="ids",
                                      show_progress=False)
    rows, scores = retriever.retrieve(query_tokens, k=min(k, len(doc_ids)), show_progress=False, n_threads=1)
    return [[doc_ids[int(i)] for i, s in zip(row, score_row) if s > 0]
            for row, score_row in zip(rows.tolist(), scores.tolist())]


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
