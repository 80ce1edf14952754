"""Evaluate an embedding model on a retrieval task (corpus, queries, qrels) end to end.

Queries are encoded with ``model.encode_query`` and documents with ``model.encode_document`` so the
model's query/document prompts apply; embeddings are L2-normalised and ranked by cosine similarity
with an exact chunked search over the full corpus; the metrics are ``retrieval_metrics`` (the
definitions of sentence-transformers' InformationRetrievalEvaluator, with trec_eval's graded nDCG:
qrels scores are kept as given, > 0 relevant). The corpus is encoded one
chunk at a time and merged into a running top-k, so neither all corpus embeddings nor a full
query x corpus score matrix is ever held. `dense_rankings` is that first stage alone (ranked id lists,
the input of `embtune.eval.two_stage`'s fusion and reranking rows); `evaluate_retrieval` scores it.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from embtune.errors import DataFormatError
from embtune.eval.metrics import check_ks, has_relevant, retrieval_metrics
from embtune.eval.search import StreamingTopK


def check_inputs(corpus: Mapping, queries: Mapping, qrels: Mapping) -> list[str]:
    """In: corpus, queries, qrels (as `evaluate_retrieval`). Out: the qrels query ids that have a
    relevant doc (score > 0), in qrels order. DataFormatError for an empty corpus or qrels, or a qrels
    id missing from ``queries`` or ``corpus``."""
    if not corpus:
        raise DataFormatError("corpus is empty", path="<corpus>")
    if not qrels:
        raise DataFormatError("qrels are empty", path="<qrels>")
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise DataFormatError(f"{len(missing_q)} qrels query ids are not in queries, e.g. {missing_q[0]!r}",
                              path="<qrels>")
    missing_d = [d for docs in qrels.values() for d in docs if d not in corpus]
    if missing_d:
        raise DataFormatError(f"{len(missing_d)} qrels doc ids are not in the corpus, e.g. {missing_d[0]!r}",
                              path="<qrels>")
    return [q for q, docs in qrels.items() if has_relevant(docs)]


def _sync(tensor: Any) -> None:
    """Wait for the GPU work that produced ``tensor`` (so a timer reads the work, not its launch)."""
    if getattr(tensor, "is_cuda", False):
        import torch

        torch.cuda.synchronize(tensor.device)


def dense_rankings(
    model: Any,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qids: Sequence[str],
    depth: int,
    *,
    batch_size: int = 64,
    corpus_chunk_size: int = 50000,
    show_progress: bool = True,
    ignore_identical_ids: bool = False,
    truncate_dim: int | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, list[str]]:
    """The dense first stage: each query's ``depth`` best documents by exact cosine search.

    In: a SentenceTransformer-like model (``encode_query`` / ``encode_document``), doc id → text
    (all of it is searched), query id → text, the query ids to rank (each must be in ``queries``),
    how many documents to keep per query. Out: query id → doc ids best first (ties by ascending
    id), at most ``depth`` each; ``{}`` when ``qids`` is empty. The corpus is encoded
    ``corpus_chunk_size`` documents at a time into a running top-k (bounded memory).
    ``ignore_identical_ids`` drops a document whose id is the query's own id (BEIR's ArguAna, Quora);
    ``truncate_dim`` keeps the first dims of every embedding before normalising (None: all).
    ``timings``, when given, receives the seconds spent: ``"query_encode_s"`` (encoding the queries),
    ``"corpus_encode_s"`` (encoding the corpus) and ``"search_s"`` (scoring and merging the top-k).
    """
    if corpus_chunk_size < 1:
        raise ValueError("corpus_chunk_size must be >= 1")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    qids = list(qids)
    spent = {"query_encode_s": 0.0, "corpus_encode_s": 0.0, "search_s": 0.0}
    ranked: dict[str, list[str]] = {}
    if qids:
        doc_ids = list(corpus)
        cut = {} if truncate_dim is None else {"truncate_dim": truncate_dim}
        started = time.perf_counter()
        query_emb = model.encode_query(
            [queries[q] for q in qids], batch_size=batch_size, show_progress_bar=show_progress,
            convert_to_tensor=True, normalize_embeddings=True, **cut,
        )
        _sync(query_emb)
        spent["query_encode_s"] = time.perf_counter() - started
        topk = StreamingTopK(query_emb, doc_ids, depth + (1 if ignore_identical_ids else 0),
                             score_function="cos")
        starts = range(0, len(doc_ids), corpus_chunk_size)
        for start in tqdm(starts, desc="Corpus chunks", disable=not show_progress or len(starts) < 2):
            chunk_ids = doc_ids[start : start + corpus_chunk_size]
            started = time.perf_counter()
            doc_emb = model.encode_document(
                [corpus[d] for d in chunk_ids], batch_size=batch_size, show_progress_bar=show_progress,
                convert_to_tensor=True, normalize_embeddings=True, **cut,
            )
            _sync(doc_emb)
            encoded = time.perf_counter()
            spent["corpus_encode_s"] += encoded - started
            topk.add(doc_emb)
            _sync(doc_emb)
            spent["search_s"] += time.perf_counter() - encoded
        started = time.perf_counter()
        _, ranking = topk.result()
        ranked = dict(zip(qids, ranking))
        if ignore_identical_ids:
            ranked = {q: [d for d in docs if d != q][:depth] for q, docs in ranked.items()}
        spent["search_s"] += time.perf_counter() - started
    if timings is not None:
        timings.update(spent)
    return ranked


def evaluate_retrieval(
    model: Any,
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Iterable[int] = (1, 5, 10, 100),
    batch_size: int = 64,
    corpus_chunk_size: int = 50000,
    show_progress: bool = True,
    ignore_identical_ids: bool = False,
    truncate_dim: int | None = None,
) -> dict[str, float]:
    """Retrieval metrics of a SentenceTransformer-like model on one task.

    ``corpus`` doc id → text (all of it is searched), ``queries`` query id → text, ``qrels`` query id
    → {doc id: integer score} (score > 0 is relevant; nDCG weighs it, see ``embtune.eval.metrics``),
    kept as given. Only queries in ``qrels`` are evaluated; a qrels
    query with no relevant document is left out of the means as in sentence-transformers and counted
    in ``num_queries_without_relevant``. Returns ``retrieval_metrics`` output: ``"<metric>@<k>"`` for
    hit_rate, precision, recall, mrr, ndcg, map and each k, plus ``num_queries``. Raises
    DataFormatError (an EmbtuneError) if the corpus or qrels are empty or a qrels id is missing from
    ``queries`` or ``corpus``. ``ignore_identical_ids``: drop a retrieved document whose id is the query's
    own id, as BEIR does for corpora whose queries are also documents (ArguAna, Quora).
    ``truncate_dim``: keep the first dims of every embedding (Matryoshka) before normalising
    (sentence-transformers' ``truncate_dim``); None keeps them all. The ranking is `dense_rankings`.
    """
    ks = check_ks(ks)
    if corpus_chunk_size < 1:
        raise ValueError("corpus_chunk_size must be >= 1")
    qids = check_inputs(corpus, queries, qrels)
    ranked = dense_rankings(model, corpus, queries, qids, max(ks), batch_size=batch_size,
                            corpus_chunk_size=corpus_chunk_size, show_progress=show_progress,
                            ignore_identical_ids=ignore_identical_ids, truncate_dim=truncate_dim)
    return retrieval_metrics(ranked, qrels, ks)
