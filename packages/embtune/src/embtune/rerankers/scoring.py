"""Scoring with a reranker: (query, document) pairs to scores, candidates to a new order.

Scores are the CrossEncoder's raw logits (``activation_fn`` = identity): the order is the same as
after a sigmoid, and logits keep their resolution where probabilities saturate near 0 or 1.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def score_pairs(model: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                show_progress: bool = False) -> np.ndarray:
    """Score ``(query, document)`` pairs with a CrossEncoder. In: the model, the pairs, batch size.
    Out: float32 array of one raw score (logit) per pair, in the pairs' order."""
    import torch

    if not pairs:
        return np.zeros(0, dtype=np.float32)
    scores = model.predict(list(pairs), batch_size=batch_size, show_progress_bar=show_progress,
                           activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    return np.asarray(scores, dtype=np.float32).reshape(len(pairs))


def rerank(model: Any, query: str, documents: Sequence[str], top_k: int | None = None,
           batch_size: int = 32) -> list[tuple[int, float]]:
    """Reorder ``documents`` for ``query``. In: a CrossEncoder, one query, candidate texts, how many to
    keep (None: all). Out: ``(index into documents, score)`` best first (ties keep the input order)."""
    scores = score_pairs(model, [(query, doc) for doc in documents], batch_size=batch_size)
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(int(i), float(scores[i])) for i in order]


def rerank_rankings(model: Any, queries: Mapping[str, str], corpus: Mapping[str, str],
                    rankings: Mapping[str, Sequence[str]], top: int = 100, batch_size: int = 32,
                    show_progress: bool = True) -> tuple[dict[str, list[str]], float]:
    """Second stage of retrieval: rerank each query's first ``top`` candidates.

    In: the CrossEncoder; query id → text; doc id → text; query id → first-stage ranking of doc ids;
    how many candidates to rerank. Out: ``(query id → reranked ids followed by the rest of the
    first-stage ranking unchanged, seconds spent scoring)``.
    """
    from tqdm.auto import tqdm

    reranked: dict[str, list[str]] = {}
    started = time.perf_counter()
    for qid in tqdm(list(rankings), desc="rerank", unit="query", disable=not show_progress):
        candidates = list(rankings[qid])
        head, tail = candidates[:top], candidates[top:]
        order = rerank(model, queries[qid], [corpus[d] for d in head], batch_size=batch_size)
        reranked[qid] = [head[i] for i, _ in order] + tail
    return reranked, time.perf_counter() - started
