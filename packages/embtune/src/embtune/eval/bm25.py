"""Lexical BM25 rankings with bm25s: the keyword baseline a dense model should beat.

Choices: BM25 is bm25s' Lucene variant (k1=1.5, b=0.75) over lower-cased word tokens with English
stop words removed and no stemming; query words that are not in the corpus vocabulary are ignored
and documents scoring 0 (no shared word) are not ranked. bm25s is optional for the core (``pip
install bm25s``; embtune-faiss depends on it): ``available()`` says whether it is installed, and
``bm25_rankings`` raises ImportError with the install command when it is not. embtune-faiss's hybrid
search and the hybrid row of `embtune.eval.two_stage` use this function.
"""
from __future__ import annotations

import importlib.util
import time
from typing import Sequence

INSTALL = "pip install bm25s"


def available() -> bool:
    """True when bm25s can be imported (checked without importing it)."""
    return importlib.util.find_spec("bm25s") is not None


def bm25_rankings(doc_texts: Sequence[str], doc_ids: Sequence[str], query_texts: Sequence[str],
                  k: int, stopwords: str | None = "en",
                  timings: dict[str, float] | None = None) -> list[list[str]]:
    """BM25 top-``k`` document ids of each query, best first (documents scoring 0 left out).

    In: ``doc_texts[i]`` the text of ``doc_ids[i]``; the query texts; ``k``; bm25s' stop-word list
    (None: keep every word). Out: one ranked id list per query, in ``query_texts`` order. ValueError
    for mismatched lengths or k < 1; ImportError naming the install command without bm25s.
    ``timings``, when given, receives the seconds spent: ``"index_s"`` (tokenizing and indexing the
    documents) and ``"search_s"`` (tokenizing and scoring the queries).
    """
    if len(doc_texts) != len(doc_ids):
        raise ValueError(f"{len(doc_texts)} document texts but {len(doc_ids)} ids")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not query_texts:
        return []
    if not doc_texts:
        return [[] for _ in query_texts]
    try:
        import bm25s
        from bm25s.tokenization import Tokenizer
    except ImportError as exc:
        raise ImportError(f"BM25 needs bm25s: {INSTALL}") from exc
    started = time.perf_counter()
    tokenizer = Tokenizer(stopwords=stopwords)
    corpus_tokens = tokenizer.tokenize(list(doc_texts), update_vocab=True, return_as="ids",
                                       show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    indexed = time.perf_counter()
    query_tokens = tokenizer.tokenize(list(query_texts), update_vocab=False, return_as="ids",
                                      show_progress=False)
    rows, scores = retriever.retrieve(query_tokens, k=min(k, len(doc_ids)), show_progress=False, n_threads=1)
    ranked = [[doc_ids[int(i)] for i, s in zip(row, score_row) if s > 0]
              for row, score_row in zip(rows.tolist(), scores.tolist())]
    if timings is not None:
        timings.update(index_s=indexed - started, search_s=time.perf_counter() - indexed)
    return ranked
