"""Retrieval metrics of a model on a run folder's chunks and eval.jsonl (held-out or labelled queries).

The searched corpus is every chunk of chunks.jsonl; a query's relevant set is its ``relevant`` chunk
ids (for --eval-labels: every chunk of each relevant document). Metrics come from
``embtune.eval.evaluate_retrieval`` (ST-compatible definitions).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from embtune.errors import EmbtuneError

REPORT_KS = (1, 5, 10, 100)
REPORT_METRICS = ("recall@1", "recall@5", "recall@10", "recall@100", "ndcg@10", "mrr@10", "map@100")


def evaluate_chunks(model: Any, chunks: list[dict[str, Any]], eval_queries: list[dict[str, Any]],
                    batch_size: int = 64, show_progress: bool = True,
                    chunk_embeddings: np.ndarray | None = None) -> dict[str, float]:
    """Evaluate ``model`` retrieving chunks for the eval queries.

    In: a SentenceTransformer-like model, chunk records (``id``, ``text``), eval records
    (``query_id``, ``query``, ``relevant``), optionally the model's own document embeddings of the
    chunks (one normalised row per chunk, e.g. the run's work/chunk_embeddings.npy) to skip
    re-encoding them. Out: ``{metric: value}`` with every ``REPORT_METRICS`` key (and the other
    metrics of ``embtune.eval``) plus ``num_queries``. Raises EmbtuneError when there is no chunk or
    no query, or the embeddings do not have one row per chunk.
    """
    from embtune.eval import evaluate_retrieval

    if not chunks:
        raise EmbtuneError("there are no chunks to search")
    if not eval_queries:
        raise EmbtuneError("there are no evaluation queries")
    corpus = {c["id"]: c["text"] for c in chunks}
    queries = {q["query_id"]: q["query"] for q in eval_queries}
    qrels = {q["query_id"]: dict.fromkeys(q["relevant"], 1) for q in eval_queries}
    if chunk_embeddings is None:
        return evaluate_retrieval(model, corpus, queries, qrels, ks=REPORT_KS, batch_size=batch_size,
                                  show_progress=show_progress)
    return _evaluate_with_embeddings(model, list(corpus), queries, qrels, chunk_embeddings, batch_size,
                                     show_progress)


def _evaluate_with_embeddings(model: Any, doc_ids: list[str], queries: dict[str, str],
                              qrels: dict[str, dict[str, int]], emb: np.ndarray, batch_size: int,
                              show_progress: bool) -> dict[str, float]:
    """The search of ``evaluate_retrieval`` (same top-k and tie rules) over given document embeddings."""
    import torch

    from embtune.eval import StreamingTopK, retrieval_metrics

    if emb.ndim != 2 or emb.shape[0] != len(doc_ids):
        raise EmbtuneError(f"chunk embeddings have shape {emb.shape}, expected one row per chunk ({len(doc_ids)})")
    qids = list(qrels)
    query_emb = model.encode_query([queries[q] for q in qids], batch_size=batch_size, show_progress_bar=show_progress,
                                   convert_to_tensor=True, normalize_embeddings=True)
    topk = StreamingTopK(query_emb, doc_ids, max(REPORT_KS), score_function="cos")
    topk.add(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)))
    _, ranking = topk.result()
    return retrieval_metrics(dict(zip(qids, ranking)), qrels, REPORT_KS)


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The report's metrics (``REPORT_METRICS``) picked out of a full metrics dict."""
    return {k: float(metrics[k]) for k in REPORT_METRICS if k in metrics}
