"""Retrieval metrics of a LlamaIndex retriever (hit rate, MRR, recall@k, nDCG...) against qrels.

Each judged query goes through ``retriever.retrieve``; node ids (``node.node_id``, or
``metadata[id_key]`` to score chunks by their source document) are ranked best first and scored
by ``embtune.eval.metrics.retrieval_metrics``. Unlike LlamaIndex's ``RetrieverEvaluator`` this gives
every cutoff k from one retrieval (LlamaIndex's cutoff is the retriever's ``similarity_top_k``),
with the same hit rate and MRR at k = ``similarity_top_k``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

try:
    from llama_index.core.schema import NodeWithScore
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_llamaindex needs llama-index-core: pip install llama-index-core") from exc

from embtune.errors import EmbtuneError
from embtune.interop import DEFAULT_KS, judged_queries, score_rankings


def node_id(hit: NodeWithScore, id_key: str | None = None) -> str:
    """The id a retrieved node is judged by: ``metadata[id_key]`` when given, else its node id."""
    node = hit.node if isinstance(hit, NodeWithScore) else hit
    value = node.metadata.get(id_key) if id_key else node.node_id
    if value in (None, ""):
        raise EmbtuneError(f'a retrieved node has no metadata["{id_key}"]')
    return str(value)


def evaluate_retriever(retriever: Any, queries: Any, qrels: Mapping[str, Mapping[str, int]] | None = None,
                       ks: Iterable[int] = DEFAULT_KS, *, id_key: str | None = None) -> dict[str, float]:
    """Metrics of ``retriever`` (a LlamaIndex ``BaseRetriever``).

    Give either ``queries`` (query id → text) and ``qrels`` (query id → {doc id: score}), or a
    dataset as ``queries`` (``QADataset`` or LlamaIndex's ``EmbeddingQAFinetuneDataset``: anything
    with ``queries`` and ``relevant_docs``). Returns ``{"hit_rate@k", "precision@k", "recall@k",
    "mrr@k", "ndcg@k", "map@k", "num_queries", "num_queries_without_relevant"}``.
    """
    if qrels is None:
        if not (hasattr(queries, "queries") and hasattr(queries, "relevant_docs")):
            raise TypeError("pass queries and qrels, or a dataset with .queries and .relevant_docs")
        qrels = {q: {d: 1 for d in docs} for q, docs in queries.relevant_docs.items()}
        queries = queries.queries
    qids, _ = judged_queries(None, queries, qrels)
    ranked = {qid: [node_id(hit, id_key) for hit in retriever.retrieve(queries[qid])] for qid in qids}
    return score_rankings(ranked, qrels, ks)
