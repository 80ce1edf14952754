"""Retrieval metrics over ranked id lists: the single implementation used across embtune.

Definitions are those of sentence-transformers' ``InformationRetrievalEvaluator`` (6.2), so numbers
are comparable with it. For one query with relevant set R (docs whose qrels score is >= 1; relevance
is binary, higher scores do not weigh more) and ranking truncated to its first k ids:

* ``hit_rate@k``  1 if any of the top k is relevant, else 0 (ST calls it ``accuracy@k``)
* ``precision@k`` (#relevant in top k) / k — always divided by k, even if fewer than k were ranked
* ``recall@k``    (#relevant in top k) / |R| — not capped by k, so recall@1 <= 1/|R|
* ``mrr@k``       1 / rank of the first relevant id in the top k, 0 if none
* ``ndcg@k``      binary DCG of the top k / DCG of min(|R|, k) ones; DCG = sum rel_i / log2(i + 1)
* ``map@k``       (sum over relevant hits in the top k of precision at that rank) / min(k, |R|)

Each metric is the mean over the evaluated queries. Which queries are evaluated:

* every query id of ``qrels`` with at least one document of score >= 1;
* a query of ``qrels`` whose scores are all < 1 has no relevant document and is left out of every
  mean, exactly as ST leaves out queries whose relevant set is empty; how many is reported as
  ``num_queries_without_relevant`` (and logged), never dropped silently;
* a query of ``qrels`` absent from ``ranked`` (or with an empty list) scores 0 on every metric;
* ranked lists of query ids that are not in ``qrels`` are not judged, so they cannot be scored;
  they are ignored.
"""
from __future__ import annotations

import logging
import math
from typing import Hashable, Iterable, Mapping, Sequence

from embtune.errors import EmbtuneError

logger = logging.getLogger(__name__)

METRIC_NAMES = ("hit_rate", "precision", "recall", "mrr", "ndcg", "map")


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Return ``ks`` as a sorted tuple of distinct positive ints; ValueError if empty or not positive."""
    out = tuple(sorted(set(ks)))
    if not out or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in out):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return out


def _query_metrics(ranking: Sequence[Hashable], relevant: set, ks: tuple[int, ...]) -> dict[str, float]:
    """Per-query values for every metric and k (``relevant`` is non-empty)."""
    out: dict[str, float] = {}
    n_rel = len(relevant)
    for k in ks:
        flags = [1 if doc in relevant else 0 for doc in ranking[:k]]
        hits = sum(flags)
        first = next((i for i, f in enumerate(flags) if f), None)
        dcg = sum(f / math.log2(i + 2) for i, f in enumerate(flags))
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(n_rel, k)))
        sum_prec, seen = 0.0, 0
        for i, f in enumerate(flags):
            if f:
                seen += 1
                sum_prec += seen / (i + 1)
        out[f"hit_rate@{k}"] = 1.0 if hits else 0.0
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_rel
        out[f"mrr@{k}"] = 0.0 if first is None else 1.0 / (first + 1)
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"map@{k}"] = sum_prec / min(k, n_rel)
    return out


def retrieval_metrics(
    ranked: Mapping[Hashable, Sequence[Hashable]],
    qrels: Mapping[Hashable, Mapping[Hashable, int]],
    ks: Iterable[int] = (1, 5, 10, 100),
) -> dict[str, float]:
    """Mean retrieval metrics of ranked doc-id lists against graded qrels.

    ``ranked`` maps query id → doc ids best first (only the first max(ks) are read); ``qrels`` maps
    query id → {doc id: score}, score >= 1 meaning relevant. Returns ``{"<metric>@<k>": mean}`` for
    metric in hit_rate, precision, recall, mrr, ndcg, map and every k, plus ``num_queries`` (queries
    averaged over) and ``num_queries_without_relevant`` (qrels queries left out because no document
    has score >= 1; see the module docstring). ValueError if a ranking repeats a doc id; EmbtuneError
    if no query has a relevant document.
    """
    ks = check_ks(ks)
    max_k = ks[-1]
    sums = {f"{m}@{k}": 0.0 for m in METRIC_NAMES for k in ks}
    evaluated = 0
    without_relevant = []
    for qid, judged in qrels.items():
        relevant = {doc for doc, score in judged.items() if score >= 1}
        if not relevant:
            without_relevant.append(qid)
            continue
        ranking = list(ranked.get(qid, ()))[:max_k]
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"ranking of query {qid!r} repeats a doc id")
        evaluated += 1
        for key, value in _query_metrics(ranking, relevant, ks).items():
            sums[key] += value
    if without_relevant:
        logger.warning(
            "%d qrels queries have no document with score >= 1 and are left out of the means (as in "
            "sentence-transformers), e.g. %r", len(without_relevant), without_relevant[0],
        )
    if evaluated == 0:
        raise EmbtuneError("no query in qrels has a relevant document (score >= 1); nothing to evaluate")
    out: dict[str, float] = {key: total / evaluated for key, total in sums.items()}
    out["num_queries"] = evaluated
    out["num_queries_without_relevant"] = len(without_relevant)
    return out
