"""Retrieval quality of a model through FAISS indexes: one row per (index, dims, dense | hybrid).

Each row holds ``retrieval_metrics`` (hit_rate, precision, recall, mrr, ndcg, map at each k; the
single metrics implementation of ``embtune.eval.metrics``) computed on what the index returns, plus
``recall_vs_exact@k``: the mean over queries of |index top-k ∩ exact top-k| / |exact top-k|, i.e.
how much of the exact neighbour set the approximate index finds (1.0 for ``Flat``). Choices:

* the corpus and queries are encoded once at full size; each Matryoshka ``dims`` truncates and
  re-normalises those vectors (no re-encoding) and gets its own index;
* the metric at k is computed from a search with top-k = k, as a user asking for k hits sees it
  (HNSW explores max(efSearch, k) candidates, so a top-100 search is better than a top-10 one);
* the exact reference is ``embtune.eval.exact_search`` (torch, ties by ascending id), so a
  ``Flat`` row equals ``embtune.eval.evaluate_retrieval`` on the same model;
* ``hybrid`` fuses the dense top-D (D = max(100, max k)) with the BM25 top-D by reciprocal rank
  fusion; its ``recall_vs_exact`` compares fusion over the index with fusion over exact search;
* only qrels queries with a relevant document (score > 0) are searched; the others are counted in
  ``num_queries_without_relevant``, as ``evaluate_retrieval`` does.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from embtune.errors import ConfigError, EmbtuneError
from embtune.eval.metrics import check_ks, retrieval_metrics
from embtune.eval.search import exact_search
from embtune.interop import judged_queries
from embtune.models.inference import (ModelLike, embedding_dim, encode_texts, load_inference_model,
                                      truncate_normalize)
from embtune_faiss.index import EmbtuneFaissIndex, faiss

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10, 100)
RRF_DEPTH = 100
ROW_KEYS = ("index", "dims", "method")
JSON_KEYS = ("ndcg@10", "recall@10", "mrr@10", "map@100", "recall_vs_exact@10")
TABLE_KEYS = (*JSON_KEYS[:2], "recall@100", *JSON_KEYS[2:])


def recall_vs_exact(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / |exact[:k]| (queries with an empty exact list
    count as 1.0). ValueError when the two lists cover different numbers of queries."""
    if len(found) != len(exact):
        raise ValueError(f"{len(found)} result lists against {len(exact)} exact ones")
    if not exact:
        return 1.0
    total = 0.0
    for got, ref in zip(found, exact):
        ref = set(ref[:k])
        total += len(ref & set(got[:k])) / len(ref) if ref else 1.0
    return total / len(exact)


def _apply_params_leniently(index: EmbtuneFaissIndex, params: str) -> None:
    """Apply each ``name=value`` of ``params`` this index has (nprobe on HNSW is skipped, logged);
    ``index.search_params`` becomes the defaults overridden by what was applied."""
    ps = faiss.ParameterSpace()
    current = dict(item.split("=", 1) for item in index.search_params.split(",") if "=" in item)
    for item in filter(None, (p.strip() for p in params.split(","))):
        name, _, value = (part.strip() for part in item.partition("="))
        try:
            ps.set_index_parameter(index.index, name, float(value))
        except (RuntimeError, ValueError):
            logger.info("index %r has no search parameter %r; skipped", index.factory, name)
            continue
        current[name] = value
    index.search_params = ",".join(f"{name}={value}" for name, value in current.items())


def _check_dims(dims: Sequence[int] | None, full: int) -> None:
    """ConfigError unless every value of ``dims`` is an integer in 1..``full`` (skipped when the
    size is unknown, ``full`` = 0)."""
    bad = [d for d in dims or () if isinstance(d, bool) or not isinstance(d, (int, np.integer))
           or d < 1 or (full and d > full)]
    if bad:
        raise ConfigError(f"dims must be integers in 1..{full} (the model's size), got {bad[0]!r}")


def _metrics_row(ranked: Mapping[int, list[list[str]]], exact: list[list[str]], qids: list[str],
                 qrels: Mapping[str, Mapping[str, int]], ks: tuple[int, ...]) -> dict[str, float]:
    """Metrics at each k from ``ranked[k]`` (one list per qid) plus recall_vs_exact@k."""
    row: dict[str, float] = {}
    for k in ks:
        metrics = retrieval_metrics(dict(zip(qids, ranked[k])), qrels, ks=(k,))
        row.update({key: value for key, value in metrics.items() if "@" in key})
        row[f"recall_vs_exact@{k}"] = recall_vs_exact(ranked[k], exact, k)
    row["num_queries"] = len(qids)
    return row


def evaluate_embeddings(query_emb: Any, doc_emb: Any, doc_ids: Sequence[str], query_ids: Sequence[str],
                        qrels: Mapping[str, Mapping[str, int]], *, indexes: str | Sequence[str] = "Flat",
                        dims: Sequence[int] | None = None, ks: Iterable[int] = DEFAULT_KS,
                        lexical: Sequence[Sequence[str]] | None = None, search_params: str | None = None,
                        rrf_depth: int = RRF_DEPTH) -> list[dict[str, Any]]:
    """Rows of metrics for precomputed embeddings.

    ``query_emb`` [Q, d] holds the queries ``query_ids`` (the judged ones), ``doc_emb`` [N, d] the
    documents ``doc_ids``; ``qrels`` query id → {doc id: score}. For every ``dims`` (None: the full
    d) and every FAISS factory string in ``indexes``, a ``"dense"`` row and, when ``lexical`` (one
    BM25 ranking per query id, best first) is given, a ``"hybrid"`` row. Each row is
    ``{"index", "dims", "method", "<metric>@<k>"..., "recall_vs_exact@<k>"..., "num_queries",
    "index_mb", "search_params"}``. ``search_params`` (e.g. ``"nprobe=32,efSearch=128"``) applies
    to each index the names it has. ConfigError for a bad dims value or index string.
    """
    ks = check_ks(ks)
    indexes = [indexes] if isinstance(indexes, str) else list(indexes)
    if not indexes:
        raise ConfigError("no index to evaluate")
    query_ids, doc_ids = list(query_ids), list(doc_ids)
    if len(query_ids) != len(query_emb) or len(doc_ids) != len(doc_emb):
        raise ValueError("embeddings and ids differ in length")
    if lexical is not None and len(lexical) != len(query_ids):
        raise ValueError(f"{len(lexical)} lexical rankings for {len(query_ids)} queries")
    full = int(np.shape(doc_emb)[1])
    _check_dims(dims, full)
    dims = list(dict.fromkeys(dims)) if dims else [full]
    depth = max(rrf_depth, ks[-1])
    rows = []
    for dim in dims:
        q = truncate_normalize(query_emb, dim)
        x = truncate_normalize(doc_emb, dim)
        _, exact = exact_search(q, x, doc_ids, k=depth, score_function="cos")
        exact_fused = None
        if lexical is not None:
            from embtune_faiss.hybrid import reciprocal_rank_fusion

            exact_fused = [reciprocal_rank_fusion([e, lex], depth) for e, lex in zip(exact, lexical)]
        for factory in indexes:
            index = EmbtuneFaissIndex.build(x, doc_ids, factory)
            if search_params:
                _apply_params_leniently(index, search_params)
            info = {"index": factory, "dims": int(dim), "search_params": index.search_params,
                    "index_mb": faiss.serialize_index(index.index).nbytes / 2**20}
            ranked = {k: index.search(q, k)[1] for k in ks}
            rows.append({**info, "method": "dense", **_metrics_row(ranked, exact, query_ids, qrels, ks)})
            if lexical is not None:
                dense = index.search(q, depth)[1]
                fused = [reciprocal_rank_fusion([d, lex], depth) for d, lex in zip(dense, lexical)]
                rows.append({**info, "method": "hybrid",
                             **_metrics_row({k: fused for k in ks}, exact_fused, query_ids, qrels, ks)})
    return rows


def evaluate(model: ModelLike, corpus: Mapping[str, str], queries: Mapping[str, str],
             qrels: Mapping[str, Mapping[str, int]], *, indexes: str | Sequence[str] = "Flat",
             dims: Sequence[int] | None = None, hybrid: bool = False, ks: Iterable[int] = DEFAULT_KS,
             batch_size: int = 64, search_params: str | None = None, show_progress: bool = True,
             query_prompt: str | None = None, document_prompt: str | None = None) -> list[dict[str, Any]]:
    """Encode ``corpus`` and the judged ``queries`` once with ``model`` and evaluate FAISS indexes.

    ``model``: folder, hub id, None (embedded MiniLM) or an in-memory SentenceTransformer; queries
    go through ``encode_query`` and documents through ``encode_document`` (``query_prompt`` /
    ``document_prompt`` override the saved prompts). ``corpus`` doc id → text, ``queries`` query id
    → text, ``qrels`` query id → {doc id: integer score} (graded: > 0 relevant, nDCG weighs it).
    ``hybrid`` adds BM25 + dense RRF rows. Returns the rows of ``evaluate_embeddings``, each also
    carrying ``num_queries_without_relevant``.
    """
    ks = check_ks(ks)
    if not corpus:
        raise EmbtuneError("corpus is empty")
    qids, without = judged_queries(corpus, queries, qrels)
    if not qids:
        raise EmbtuneError("no query in qrels has a relevant document (score > 0); nothing to evaluate")
    st = load_inference_model(model)
    _check_dims(dims, embedding_dim(st))
    doc_ids = list(corpus)
    doc_texts = [corpus[d] for d in doc_ids]
    query_texts = [queries[q] for q in qids]
    doc_emb = encode_texts(st, doc_texts, "document", batch_size=batch_size, normalize=False,
                           prompt=document_prompt, show_progress=show_progress)
    query_emb = encode_texts(st, query_texts, "query", batch_size=batch_size, normalize=False,
                             prompt=query_prompt, show_progress=show_progress)
    lexical = None
    if hybrid:
        from embtune_faiss.hybrid import bm25_rankings

        lexical = bm25_rankings(doc_texts, doc_ids, query_texts, k=max(RRF_DEPTH, ks[-1]))
    rows = evaluate_embeddings(query_emb, doc_emb, doc_ids, qids, qrels, indexes=indexes, dims=dims, ks=ks,
                               lexical=lexical, search_params=search_params)
    for row in rows:
        row["num_queries_without_relevant"] = without
    return rows


def rows_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = TABLE_KEYS) -> str:
    """Markdown table of ``rows``: index, dims, method, the metric ``keys``, and index size in MB."""
    from embtune.tables import markdown_table

    body = [[str(row["index"]), str(row["dims"]), str(row["method"]),
             *(f"{row[k]:.4f}" if k in row else "—" for k in keys),
             f"{row['index_mb']:.1f}" if "index_mb" in row else "—"] for row in rows]
    return markdown_table(["index", "dims", "method", *keys, "index MB"], body)
