"""Retrieval metrics of a model on a run folder's chunks and eval.jsonl (held-out or labelled queries).

Every chunk of chunks.jsonl is searched (exact cosine search, ties broken as in
``embtune.eval``), with the model's chunk embeddings computed once by an embed stage. Two levels:

* ``"chunk"`` (held-out queries): a query's relevant items are its ``relevant`` chunk ids.
* ``"document"`` (``--eval-labels``, whose judgements name documents): the chunk ranking is turned
  into a document ranking, each document at the rank of its best chunk (MaxP), and scored against
  the documents of the ``relevant`` chunks, so the numbers compare with document-level benchmarks
  such as BEIR whatever the chunking.

A relevant document that has no chunk (a labelled document with no text; eval.jsonl's
``unretrievable``) stays in the judgements and counts as a miss: recall cannot reach 1 then, which
is what such a label means (BEIR keeps such judgements in its qrels too).

Relevance is graded when an eval record carries ``grades`` ({chunk id: qrels score}, from graded
``--eval-labels``): nDCG weighs each relevant item by its score (a document by its chunks' score);
without it every relevant item scores 1.

Metrics are ``embtune.eval.retrieval_metrics`` (the definitions of sentence-transformers'
InformationRetrievalEvaluator, with trec_eval's graded nDCG).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from embtune.errors import EmbtuneError

REPORT_KS = (1, 5, 10, 100)
REPORT_METRICS = ("recall@1", "recall@5", "recall@10", "recall@100", "ndcg@10", "mrr@10", "map@100")
LEVELS = ("chunk", "document")
SEARCH_ROWS = 50000
"""Chunk embeddings scored per step of the search: at most (queries x SEARCH_ROWS) scores exist at once."""


def rank_chunks(model: Any, queries: list[str], chunk_ids: list[str], chunk_embeddings: np.ndarray, k: int,
                batch_size: int = 64, show_progress: bool = True) -> list[list[str]]:
    """Top ``k`` chunk ids per query, best first (exact cosine search over the given embeddings).

    In: the model (its ``encode_query`` embeds the queries), query texts, the chunk ids and their
    embeddings (one row per id; an array or a memory map). Out: one ranked id list per query. The
    matrix is searched ``SEARCH_ROWS`` rows at a time (the ranking does not depend on that size).
    Raises EmbtuneError when the embeddings do not have one row per chunk.
    """
    import torch

    from embtune.eval import StreamingTopK

    if chunk_embeddings.ndim != 2 or chunk_embeddings.shape[0] != len(chunk_ids):
        raise EmbtuneError(f"chunk embeddings have shape {chunk_embeddings.shape}, expected one row per chunk "
                           f"({len(chunk_ids)}); rerun with --force")
    query_emb = model.encode_query(queries, batch_size=batch_size, show_progress_bar=show_progress,
                                   convert_to_tensor=True, normalize_embeddings=True)
    topk = StreamingTopK(query_emb, chunk_ids, min(k, len(chunk_ids)), score_function="cos")
    for start in range(0, len(chunk_ids), SEARCH_ROWS):  # bounded: scores of one slice at a time
        rows = chunk_embeddings[start : start + SEARCH_ROWS]
        topk.add(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
    return topk.result()[1]


def documents_in_order(ranking: list[str], doc_of: dict[str, str]) -> list[str]:
    """A chunk ranking as a document ranking: each document once, at the rank of its best chunk."""
    return list(dict.fromkeys(doc_of[c] for c in ranking))


def search_depth(chunks: list[dict[str, Any]], level: str) -> int:
    """How many chunks to rank per query so that the metrics see their first ``max(REPORT_KS)`` items:
    that many at chunk level; at document level that times the most chunks of one document, so the
    best chunks of max(ks) distinct documents are always in the list."""
    depth = max(REPORT_KS)
    if level == "document":
        depth *= max(Counter(c["doc_id"] for c in chunks).values())
    return depth


def evaluate_rankings(chunks: list[dict[str, Any]], eval_queries: list[dict[str, Any]],
                      rankings: list[list[str]], level: str = "chunk", per_query: bool = False
                      ) -> dict[str, Any]:
    """Score chunk rankings (one per eval query, best first; from any retriever) at ``level``.

    In: chunk records (``id``, ``doc_id``), eval records (``query_id``, ``relevant`` chunk ids, optional
    ``grades`` {chunk id: score} and ``unretrievable`` {doc id: score}: relevant documents with no
    chunk, kept as misses), the rankings in eval-record order, ``level`` "chunk" or "document" (see
    the module docstring). Out: ``embtune.eval.retrieval_metrics``'s dict; with ``per_query`` also
    ``"per_query": {query id: {metric: value, "rank": first relevant item's rank or None}}``
    (``embtune.eval.metrics.per_query_metrics``).
    """
    from embtune.eval.metrics import per_query_metrics, retrieval_metrics

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    qids = [q["query_id"] for q in eval_queries]
    grades = [q.get("grades") or {} for q in eval_queries]
    doc_of = {c["id"]: c["doc_id"] for c in chunks}
    item = (lambda c: c) if level == "chunk" else doc_of.__getitem__
    if level == "chunk":
        ranked = dict(zip(qids, rankings))
    else:
        ranked = {qid: documents_in_order(r, doc_of) for qid, r in zip(qids, rankings)}
    qrels = {}
    for q, g in zip(eval_queries, grades):
        judged = {item(c): g.get(c, 1) for c in q["relevant"]}
        for doc_id, score in (q.get("unretrievable") or {}).items():  # never ranked: a miss at any level
            judged.setdefault(doc_id, score)
        qrels[q["query_id"]] = judged
    metrics: dict[str, Any] = retrieval_metrics(ranked, qrels, REPORT_KS)
    if per_query:
        metrics["per_query"] = per_query_metrics(ranked, qrels, REPORT_KS)
    return metrics


def evaluate_chunks(model: Any, chunks: list[dict[str, Any]], eval_queries: list[dict[str, Any]],
                    chunk_embeddings: np.ndarray, level: str = "chunk", batch_size: int = 64,
                    show_progress: bool = True, per_query: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on the eval queries, searching all chunks.

    In: the model, chunk records (``id``, ``doc_id``), eval records (``query_id``, ``query``,
    ``relevant`` chunk ids, optional ``grades`` {chunk id: score}, default 1, and ``unretrievable``),
    the model's document embeddings of the chunks (one normalised row per chunk), ``level`` "chunk" or
    "document" (see the module docstring). Out: ``{metric: value}`` with every ``REPORT_METRICS`` key
    (and the other metrics of ``embtune.eval``) plus ``num_queries``, and ``per_query`` when asked
    (``evaluate_rankings``). Raises EmbtuneError when there is no chunk or no query.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if not chunks:
        raise EmbtuneError("there are no chunks to search")
    if not eval_queries:
        raise EmbtuneError("there are no evaluation queries")
    ids = [c["id"] for c in chunks]
    rankings = rank_chunks(model, [q["query"] for q in eval_queries], ids, chunk_embeddings,
                           search_depth(chunks, level), batch_size, show_progress)
    return evaluate_rankings(chunks, eval_queries, rankings, level, per_query)


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The report's metrics (``REPORT_METRICS``) picked out of a full metrics dict."""
    return {k: float(metrics[k]) for k in REPORT_METRICS if k in metrics}
