"""Two-stage retrieval evaluation: dense search, BM25 + dense fusion and cross-encoder reranking.

One dense first stage (`embtune.eval.retrieval.dense_rankings`: exact cosine search, the ranking of
`evaluate_retrieval`) gives every query its top ``D = max(top, max(ks))`` documents, computed once
and shared by all rows:

* ``dense``: that ranking, so its metrics are `evaluate_retrieval`'s;
* ``hybrid (BM25 + dense)`` (bm25s installed and ``bm25=True``): the dense top-D fused with the BM25
  top-D (`embtune.eval.bm25.bm25_rankings`) by reciprocal rank fusion (`embtune.eval.hybrid`), cut
  to D; with the defaults (D = 100) this is embtune-faiss's ``hybrid`` row over a ``Flat`` index;
* ``dense + rerank (<name>)``, one per reranker: each query's first ``top`` dense candidates
  reordered by the cross-encoder's score (`embtune.rerankers.scoring.rerank_rankings`), the rest of
  the dense top-D after them unchanged.

Every row holds ``retrieval_metrics`` at ``ks`` (so ``ndcg@10``, ``recall@10``, ``recall@100``,
``mrr@10``, ``map@100`` with the default ks) and ``num_queries``, plus ``ms_per_query``, wall-clock
milliseconds per evaluated query: for ``dense``, encoding the queries and searching (corpus encoding
excluded, reported as ``index_s``); for ``hybrid``, that plus BM25 query scoring and fusion (BM25
indexing goes to ``index_s`` with the corpus encoding); for a rerank row, the time the reranking ADDS
to the dense stage (scoring ``top`` pairs per query). Timings include Python overhead and are taken
with the GPU synchronised.
"""
from __future__ import annotations

import gc
import logging
import time
from typing import Any, Iterable, Mapping

from embtune.errors import ConfigError, EmbtuneError
from embtune.eval.metrics import check_ks, retrieval_metrics

logger = logging.getLogger(__name__)

DENSE = "dense"
HYBRID = "hybrid (BM25 + dense)"
REPORT_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")
"""The metric columns of the two-stage table (the ``embtune eval --reranker`` output)."""


def rerank_method(name: str) -> str:
    """The ``method`` of the row of reranker ``name``: ``"dense + rerank (<name>)"``."""
    return f"dense + rerank ({name})"


def _embedder(model: Any) -> Any:
    """``model`` when it encodes (has ``encode_query``), else `load_inference_model` of it (a folder,
    hub id or None: the embedded MiniLM)."""
    if hasattr(model, "encode_query"):
        return model
    from embtune.models.inference import load_inference_model

    return load_inference_model(model)


def _reranker(value: Any) -> tuple[Any, bool]:
    """``(CrossEncoder, loaded here)``: ``value`` itself when it scores pairs (has ``predict``), else
    `load_reranker` of it (a folder, hub id or None: the embedded MiniLM with a fresh head)."""
    from embtune.rerankers.loading import as_reranker

    try:
        reranker = as_reranker(value)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    return reranker, reranker is not value


def _release_memory() -> None:
    """Collect a dropped reranker (one this module loaded) and give its GPU memory back."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _ms(seconds: float, count: int) -> float:
    return 1000.0 * seconds / count if count else 0.0


def two_stage_eval(
    model: Any,
    rerankers: Mapping[str, Any] | None,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    top: int = 100,
    ks: Iterable[int] = (1, 5, 10, 100),
    batch_size: int = 64,
    rerank_batch_size: int = 32,
    bm25: bool = True,
    show_progress: bool = True,
    ignore_identical_ids: bool = False,
) -> list[dict[str, Any]]:
    """Dense, hybrid and dense + rerank rows of one retrieval task (see the module docstring).

    In: ``model`` the embedder (a SentenceTransformer-like object with ``encode_query`` /
    ``encode_document``, or a folder / hub id / None for `load_inference_model`); ``rerankers`` row
    name → a CrossEncoder (anything with ST's ``predict``) or a folder / hub id / None (embedded
    MiniLM, fresh head) loaded with `load_reranker` one at a time and freed after its row (None or
    empty: no rerank rows); ``corpus`` doc id → text, ``queries`` query id → text, ``qrels`` query
    id → {doc id: score} (> 0 relevant; queries without a relevant doc are left out and counted in
    ``num_queries_without_relevant``); ``top`` candidates reranked per query; ``ks`` metric cut-offs;
    ``batch_size`` (embedder) and ``rerank_batch_size`` (pairs per reranker batch); ``bm25`` adds the
    hybrid row when bm25s is installed; ``ignore_identical_ids`` drops a document whose id is the
    query's id (BEIR's ArguAna, Quora) from every ranking.

    Out: rows in the order dense, hybrid, then one per reranker in ``rerankers`` order, each
    ``{"method", "<metric>@<k>"..., "num_queries", "num_queries_without_relevant", "ms_per_query"}``
    plus ``"index_s"`` (dense and hybrid) and ``"reranker"`` (the name; rerank rows). Raises
    ConfigError for ``top`` < 1 or a reranker of another type, DataFormatError for bad inputs
    (`evaluate_retrieval`'s checks), ModelLoadError for a reranker folder that does not load.
    """
    from embtune.eval.retrieval import check_inputs, dense_rankings

    ks = check_ks(ks)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top (candidates to rerank) must be an integer >= 1, got {top!r}")
    qids = check_inputs(corpus, queries, qrels)
    if not qids:
        raise EmbtuneError("no query in qrels has a relevant document (score > 0); nothing to evaluate")
    depth = max(top, ks[-1])
    embedder = _embedder(model)
    spent: dict[str, float] = {}
    dense = dense_rankings(embedder, corpus, queries, qids, depth, batch_size=batch_size, timings=spent,
                           show_progress=show_progress, ignore_identical_ids=ignore_identical_ids)
    dense_s = spent["query_encode_s"] + spent["search_s"]
    corpus_s = spent["corpus_encode_s"]
    rows = [{"method": DENSE, **retrieval_metrics(dense, qrels, ks), "ms_per_query": _ms(dense_s, len(qids)),
             "index_s": corpus_s}]
    if bm25:
        rows.extend(_hybrid_row(corpus, queries, qrels, qids, dense, depth, ks, dense_s, corpus_s,
                                ignore_identical_ids))
    for name, value in (rerankers or {}).items():
        reranker, loaded = _reranker(value)
        reranked, seconds = _rerank(reranker, queries, corpus, dense, top, rerank_batch_size, show_progress)
        del reranker
        if loaded:
            _release_memory()
        rows.append({"method": rerank_method(name), "reranker": name,
                     **retrieval_metrics(reranked, qrels, ks), "ms_per_query": _ms(seconds, len(qids))})
    return rows


def _rerank(reranker: Any, queries: Mapping[str, str], corpus: Mapping[str, str],
            dense: Mapping[str, list[str]], top: int, batch_size: int,
            show_progress: bool) -> tuple[dict[str, list[str]], float]:
    """`rerank_rankings` of the dense rankings, the reranker in eval mode (restored afterwards)."""
    from embtune.rerankers.scoring import rerank_rankings

    training = getattr(reranker, "training", False)
    if training:
        reranker.eval()
    try:
        return rerank_rankings(reranker, queries, corpus, dense, top=top, batch_size=batch_size,
                               show_progress=show_progress)
    finally:
        if training:
            reranker.train()


def _hybrid_row(corpus: Mapping[str, str], queries: Mapping[str, str],
                qrels: Mapping[str, Mapping[str, int]], qids: list[str], dense: Mapping[str, list[str]],
                depth: int, ks: tuple[int, ...], dense_s: float, corpus_s: float,
                ignore_identical_ids: bool) -> list[dict[str, Any]]:
    """``[hybrid row]``, or ``[]`` (logged) when bm25s is not installed."""
    from embtune.eval.bm25 import INSTALL, available, bm25_rankings
    from embtune.eval.hybrid import hybrid_rankings

    if not available():
        logger.warning("no hybrid (BM25 + dense) row: it needs bm25s (%s)", INSTALL)
        return []
    doc_ids = list(corpus)
    spent: dict[str, float] = {}
    lexical = bm25_rankings([corpus[d] for d in doc_ids], doc_ids, [queries[q] for q in qids],
                            k=depth + (1 if ignore_identical_ids else 0), timings=spent)
    started = time.perf_counter()
    by_query = dict(zip(qids, lexical))
    if ignore_identical_ids:
        by_query = {q: [d for d in docs if d != q][:depth] for q, docs in by_query.items()}
    fused = hybrid_rankings(dense, by_query, depth)
    fuse_s = time.perf_counter() - started
    return [{"method": HYBRID, **retrieval_metrics(fused, qrels, ks),
             "ms_per_query": _ms(dense_s + spent.get("search_s", 0.0) + fuse_s, len(qids)),
             "index_s": corpus_s + spent.get("index_s", 0.0)}]
