"""User labels for evaluation: document-level qrels mapped onto chunks.

``--labels`` / ``--eval-labels`` are qrels TSVs (``query-id <TAB> doc-id [<TAB> score]``) whose doc ids
name documents of CORPUS (a BEIR folder's ``_id`` values, or file paths relative to the corpus
folder); they are read by ``embtune.pairs.labels.read_label_qrels`` (the reader the labels pair builder
uses) and their queries by ``embtune.data.beir.read_queries``. Chunking splits a document into chunks, so for evaluation every chunk of a
relevant document counts as relevant, with the document's qrels score (graded labels keep their grades
in eval.jsonl's ``grades``, which nDCG weighs).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Collection, Iterable

__all__ = ["chunks_by_doc", "eval_queries_from_labels"]


def chunks_by_doc(chunks: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """``{doc id: [chunk ids in file order]}`` from chunk records."""
    mapping: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        mapping[chunk["doc_id"]].append(chunk["id"])
    return dict(mapping)


def eval_queries_from_labels(judgements: Iterable[tuple[str, str, int]], queries: dict[str, str],
                             doc_chunks: dict[str, list[str]], unretrievable: Collection[str] = ()
                             ) -> tuple[list[dict[str, Any]], int]:
    """Turn relevant ``(query id, doc id, score)`` judgements into eval.jsonl records over chunks.

    In: judgements (from ``read_label_qrels``, scores > 0), the query texts, ``{doc id: [chunk
    ids]}``. Out: ``(records, dropped)``: one ``{"query_id", "query", "relevant": [chunk ids of its
    relevant documents]}`` per query in first-seen order, plus ``"grades": {chunk id: its document's
    score}`` when a score of the query is not 1 (binary labels give the records of before), and the
    number of queries left out because their documents have no chunk. A judged document in
    ``unretrievable`` (a document without text) goes to the record's ``"unretrievable": {doc id:
    score}`` instead: it stays judged and counts as a miss, and keeps its query in (even with no
    chunk to find).
    """
    unretrievable = frozenset(unretrievable)
    missing: dict[str, dict[str, int]] = {}
    grades: dict[str, dict[str, int]] = {}
    for qid, doc_id, score in judgements:
        chunk_grades = grades.setdefault(qid, {})
        if doc_id in unretrievable and not doc_chunks.get(doc_id):
            missing.setdefault(qid, {}).setdefault(doc_id, score)
        for c in doc_chunks.get(doc_id, []):
            chunk_grades.setdefault(c, score)
    records = []
    for qid, chunk_grades in grades.items():
        if chunk_grades or qid in missing:
            record = {"query_id": qid, "query": queries[qid], "relevant": list(chunk_grades)}
            if any(g != 1 for g in chunk_grades.values()):
                record["grades"] = chunk_grades
            if qid in missing:
                record["unretrievable"] = missing[qid]
            records.append(record)
    return records, len(grades) - len(records)
