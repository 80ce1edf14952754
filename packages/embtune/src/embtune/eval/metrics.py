"""Retrieval metrics over ranked id lists: the single implementation used across embtune.

Qrels are graded: ``{doc id: score}`` with integer scores as in BEIR/TREC (0, 1, 2, ...). A document
is **relevant** when its score is > 0 (``is_relevant``); a score of 0 (or below) means "judged not
relevant", exactly like an unjudged document. For one query with relevant set R and ranking truncated
to its first k ids:

* ``hit_rate@k``  1 if any of the top k is relevant, else 0 (ST calls it ``accuracy@k``)
* ``precision@k`` (#relevant in top k) / k — always divided by k, even if fewer than k were ranked
* ``recall@k``    (#relevant in top k) / |R| — not capped by k, so recall@1 <= 1/|R|
* ``mrr@k``       1 / rank of the first relevant id in the top k, 0 if none
* ``ndcg@k``      DCG of the top k / DCG of the ideal top k, DCG = sum gain_i / log2(i + 1), with the
  **linear gain** gain = score for score > 0, else 0 (``gain``); the ideal ranking sorts all judged
  documents by gain. This is trec_eval's ``ndcg_cut.k``, which BEIR and MTEB report through
  pytrec_eval (checked against pytrec_eval in tests/eval/test_retrieval.py), not the 2^score - 1 form.
* ``map@k``       (sum over relevant hits in the top k of precision at that rank) / min(k, |R|)

hit_rate, precision, recall, mrr and map treat every relevant document alike (binary) and are
sentence-transformers' ``InformationRetrievalEvaluator`` (6.2) definitions, so they compare with it
(note map@k: ST's min(k, |R|) denominator, where trec_eval's ``map_cut`` divides by |R|). With binary
qrels (every score 0 or 1) nDCG is ST's binary nDCG too, so all six metrics equal ST's.

Each metric is the mean over the evaluated queries. Which queries are evaluated:

* every query id of ``qrels`` with at least one relevant document (score > 0);
* a query of ``qrels`` whose scores are all <= 0 has no relevant document and is left out of every
  mean, exactly as ST leaves out queries whose relevant set is empty (trec_eval would average in a
  0); how many is reported as ``num_queries_without_relevant`` (and logged), never dropped silently;
* a query of ``qrels`` absent from ``ranked`` (or with an empty list) scores 0 on every metric;
* ranked lists of query ids that are not in ``qrels`` are not judged, so they cannot be scored;
  they are ignored.
"""
from __future__ import annotations

import logging
import math
import numbers
from typing import Hashable, Iterable, Mapping, Sequence

from embtune.errors import DataFormatError, EmbtuneError

logger = logging.getLogger(__name__)

METRIC_NAMES = ("hit_rate", "precision", "recall", "mrr", "ndcg", "map")


def is_relevant(score: float) -> bool:
    """True when a qrels score marks a relevant document: score > 0 (0 or below is judged not relevant)."""
    return score > 0


def gain(score: float) -> float:
    """nDCG gain of a qrels score: the score itself when relevant (> 0), else 0 (trec_eval's linear gain)."""
    return float(score) if score > 0 else 0.0


def has_relevant(judged: Mapping[Hashable, float]) -> bool:
    """True when one query's ``{doc id: score}`` judges at least one document relevant (score > 0)."""
    return any(is_relevant(score) for score in judged.values())


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Return ``ks`` as a sorted tuple of distinct positive ints; ValueError if empty or not positive."""
    out = tuple(sorted(set(ks)))
    if not out or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in out):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return out


def _query_metrics(ranking: Sequence[Hashable], judged: Mapping[Hashable, float], ks: tuple[int, ...]
                   ) -> dict[str, float]:
    """Per-query values for every metric and k (``judged`` has at least one relevant document)."""
    out: dict[str, float] = {}
    ideal = sorted((gain(s) for s in judged.values() if is_relevant(s)), reverse=True)
    n_rel = len(ideal)
    for k in ks:
        gains = [gain(judged.get(doc, 0)) for doc in ranking[:k]]
        flags = [1 if g > 0 else 0 for g in gains]
        hits = sum(flags)
        first = next((i for i, f in enumerate(flags) if f), None)
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
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


def _check_scores(qid: Hashable, judged: Mapping[Hashable, float]) -> None:
    """DataFormatError unless every score of one query's judgements is a real number."""
    for doc, score in judged.items():
        if not isinstance(score, numbers.Real):
            raise DataFormatError(f"qrels score of query {qid!r}, document {doc!r} must be a number, got "
                                  f"{score!r}", path="<qrels>")


def first_relevant_rank(ranking: Sequence[Hashable], judged: Mapping[Hashable, float]) -> int | None:
    """Rank (1 = first) of the first relevant id (score > 0) in ``ranking``; None when none is ranked."""
    return next((i for i, doc in enumerate(ranking, start=1) if is_relevant(judged.get(doc, 0))), None)


def _evaluated(ranked: Mapping[Hashable, Sequence[Hashable]], qrels: Mapping[Hashable, Mapping[Hashable, int]],
               max_k: int) -> tuple[list[tuple[Hashable, list[Hashable], Mapping[Hashable, int]]], list[Hashable]]:
    """``([(qid, ranking cut to max_k, judged) of the evaluated queries], [qids without relevant])``;
    DataFormatError for a non-numeric score, ValueError when a ranking repeats an id."""
    evaluated, without_relevant = [], []
    for qid, judged in qrels.items():
        _check_scores(qid, judged)
        if not has_relevant(judged):
            without_relevant.append(qid)
            continue
        ranking = list(ranked.get(qid, ()))[:max_k]
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"ranking of query {qid!r} repeats a doc id")
        evaluated.append((qid, ranking, judged))
    return evaluated, without_relevant


def per_query_metrics(
    ranked: Mapping[Hashable, Sequence[Hashable]],
    qrels: Mapping[Hashable, Mapping[Hashable, int]],
    ks: Iterable[int] = (1, 5, 10, 100),
) -> dict[Hashable, dict[str, float | int | None]]:
    """Each evaluated query's own values (the ones ``retrieval_metrics`` averages).

    In: as ``retrieval_metrics``. Out: ``{query id: {"<metric>@<k>": value, ..., "rank": rank of its
    first relevant id within the first max(ks), or None}}`` for every qrels query with a relevant
    document (the others are left out, as from the means). Same errors as ``retrieval_metrics``
    (except that no query at all gives ``{}``).
    """
    ks = check_ks(ks)
    evaluated, _ = _evaluated(ranked, qrels, ks[-1])
    return {qid: {**_query_metrics(ranking, judged, ks), "rank": first_relevant_rank(ranking, judged)}
            for qid, ranking, judged in evaluated}


def retrieval_metrics(
    ranked: Mapping[Hashable, Sequence[Hashable]],
    qrels: Mapping[Hashable, Mapping[Hashable, int]],
    ks: Iterable[int] = (1, 5, 10, 100),
) -> dict[str, float]:
    """Mean retrieval metrics of ranked doc-id lists against graded qrels.

    ``ranked`` maps query id → doc ids best first (only the first max(ks) are read); ``qrels`` maps
    query id → {doc id: integer score}, score > 0 meaning relevant and weighing its score in nDCG
    (linear gain; see the module docstring). Returns ``{"<metric>@<k>": mean}`` for metric in
    hit_rate, precision, recall, mrr, ndcg, map and every k, plus ``num_queries`` (queries averaged
    over) and ``num_queries_without_relevant`` (qrels queries left out because no document has
    score > 0). ValueError if a ranking repeats a doc id; DataFormatError for a score that is not a
    number; EmbtuneError if no query has a relevant document.
    """
    ks = check_ks(ks)
    sums = {f"{m}@{k}": 0.0 for m in METRIC_NAMES for k in ks}
    evaluated, without_relevant = _evaluated(ranked, qrels, ks[-1])
    for _, ranking, judged in evaluated:
        for key, value in _query_metrics(ranking, judged, ks).items():
            sums[key] += value
    if without_relevant:
        logger.warning(
            "%d qrels queries have no document with score > 0 and are left out of the means (as in "
            "sentence-transformers), e.g. %r", len(without_relevant), without_relevant[0],
        )
    if not evaluated:
        raise EmbtuneError("no query in qrels has a relevant document (score > 0); nothing to evaluate")
    out: dict[str, float] = {key: total / len(evaluated) for key, total in sums.items()}
    out["num_queries"] = len(evaluated)
    out["num_queries_without_relevant"] = len(without_relevant)
    return out
