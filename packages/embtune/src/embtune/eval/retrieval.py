"""Evaluate an embedding model on a retrieval task (corpus, queries, qrels) end to end.

Queries are encoded with ``model.encode_query`` and documents with ``model.encode_document`` so the
model's query/document prompts apply; embeddings are L2-normalised and ranked by cosine similarity
with an exact chunked search over the full corpus; the metrics are ``retrieval_metrics`` (the
definitions of sentence-transformers' InformationRetrievalEvaluator, with trec_eval's graded nDCG:
qrels scores are kept as given, > 0 relevant). The corpus is encoded one
chunk at a time and merged into a running top-k, so neither all corpus embeddings nor a full
query x corpus score matrix is ever held.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from tqdm.auto import tqdm

from embtune.errors import DataFormatError
from embtune.eval.metrics import check_ks, has_relevant, retrieval_metrics
from embtune.eval.search import StreamingTopK


def _check_inputs(corpus: Mapping, queries: Mapping, qrels: Mapping) -> list[str]:
    """Return the qrels query ids that have a relevant doc; DataFormatError for unknown ids."""
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
    (sentence-transformers' ``truncate_dim``); None keeps them all.
    """
    ks = check_ks(ks)
    if corpus_chunk_size < 1:
        raise ValueError("corpus_chunk_size must be >= 1")
    qids = _check_inputs(corpus, queries, qrels)
    doc_ids = list(corpus)
    cut = {} if truncate_dim is None else {"truncate_dim": truncate_dim}
    ranked: dict[str, list[str]] = {}
    if qids:
        query_emb = model.encode_query(
            [queries[q] for q in qids], batch_size=batch_size, show_progress_bar=show_progress,
            convert_to_tensor=True, normalize_embeddings=True, **cut,
        )
        depth = max(ks) + (1 if ignore_identical_ids else 0)
        topk = StreamingTopK(query_emb, doc_ids, depth, score_function="cos")
        starts = range(0, len(doc_ids), corpus_chunk_size)
        for start in tqdm(starts, desc="Corpus chunks", disable=not show_progress or len(starts) < 2):
            chunk_ids = doc_ids[start : start + corpus_chunk_size]
            doc_emb = model.encode_document(
                [corpus[d] for d in chunk_ids], batch_size=batch_size, show_progress_bar=show_progress,
                convert_to_tensor=True, normalize_embeddings=True, **cut,
            )
            topk.add(doc_emb)
        _, ranking = topk.result()
        ranked = dict(zip(qids, ranking))
        if ignore_identical_ids:
            ranked = {q: [d for d in docs if d != q][: max(ks)] for q, docs in ranked.items()}
    return retrieval_metrics(ranked, qrels, ks)
