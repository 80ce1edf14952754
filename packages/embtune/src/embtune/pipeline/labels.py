"""User labels for evaluation: document-level qrels mapped onto chunks.

``--labels`` / ``--eval-labels`` are qrels TSVs (``query-id <TAB> doc-id [<TAB> score]``) whose doc ids
name documents of CORPUS (a BEIR folder's ``_id`` values, or file paths relative to the corpus
folder); they are read by ``embtune.pairs.labels`` (the same reader the labels pair builder uses,
re-exported here). Chunking splits a document into chunks, so for evaluation every chunk of a
relevant document counts as relevant.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from embtune.pairs.labels import read_label_qrels, read_queries

__all__ = ["chunks_by_doc", "eval_queries_from_labels", "read_label_qrels", "read_queries"]


def chunks_by_doc(chunks: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """``{doc id: [chunk ids in file order]}`` from chunk records."""
    mapping: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        mapping[chunk["doc_id"]].append(chunk["id"])
    return dict(mapping)


def eval_queries_from_labels(judgements: Iterable[tuple[str, str]], queries: dict[str, str],
                             doc_chunks: dict[str, list[str]]) -> tuple[list[dict[str, Any]], int]:
    """Turn relevant ``(query id, doc id)`` judgements into eval.jsonl records over chunks.

    In: judgements (from ``read_label_qrels``), the query texts, ``{doc id: [chunk ids]}``. Out:
    ``(records, dropped)``: one ``{"query_id", "query", "relevant": [chunk ids of its relevant
    documents]}`` per query in first-seen order, and the number of queries left out because their
    documents have no chunk.
    """
    relevant: dict[str, list[str]] = {}
    for qid, doc_id in judgements:
        ids = relevant.setdefault(qid, [])
        ids.extend(c for c in doc_chunks.get(doc_id, []) if c not in ids)
    records = [{"query_id": qid, "query": queries[qid], "relevant": ids} for qid, ids in relevant.items() if ids]
    return records, len(relevant) - len(records)
