"""Retrieval metrics of ANY LangChain retriever against qrels.

Each judged query is sent through ``retriever.batch`` (``invoke`` per query, in threads); the
returned Documents are mapped to ids (``Document.id``, or ``metadata[id_key]`` to score chunks by
their source document) and scored by ``embtune.eval.metrics.retrieval_metrics``, the definitions
of sentence-transformers' InformationRetrievalEvaluator. Metrics at k larger than the number of
documents the retriever returns are those of the shorter list (a warning says so).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

try:
    from langchain_core.documents import Document
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_langchain needs langchain-core: pip install langchain-core") from exc

from embtune.errors import EmbtuneError
from embtune.interop import DEFAULT_KS, judged_queries, score_rankings


def document_id(doc: Document, id_key: str | None = None) -> str:
    """The id a retrieved Document is judged by: ``metadata[id_key]`` when ``id_key`` is given, else
    ``Document.id``. EmbtuneError when it has none."""
    value = doc.metadata.get(id_key) if id_key else doc.id
    if value in (None, ""):
        where = f'metadata["{id_key}"]' if id_key else "Document.id"
        raise EmbtuneError(f"a retrieved document has no {where}; set it when indexing or pass id_key=")
    return str(value)


def evaluate_retriever(retriever: Any, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                       ks: Iterable[int] = DEFAULT_KS, *, id_key: str | None = None,
                       max_concurrency: int | None = None) -> dict[str, float]:
    """Metrics of ``retriever`` (a ``BaseRetriever`` or any Runnable from str to list[Document]).

    ``queries`` query id → text, ``qrels`` query id → {doc id: graded score, > 0 relevant}, ``ks`` the
    cutoffs. Returns ``{"hit_rate@k", "precision@k", "recall@k", "mrr@k", "ndcg@k", "map@k",
    "num_queries", "num_queries_without_relevant"}``. ``max_concurrency`` caps the threads of
    ``retriever.batch``. EmbtuneError for qrels naming unknown queries or documents without an id.
    """
    qids, _ = judged_queries(None, queries, qrels)
    config = {"max_concurrency": max_concurrency} if max_concurrency else None
    answers = retriever.batch([queries[q] for q in qids], config=config) if qids else []
    ranked = {qid: [document_id(doc, id_key) for doc in docs] for qid, docs in zip(qids, answers)}
    return score_rankings(ranked, qrels, ks)
