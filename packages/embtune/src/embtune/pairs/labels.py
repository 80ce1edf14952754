"""Pairs from labels the user already has: queries + qrels naming documents, or a pairs file.

* ``LabelPairs(queries_path, qrels_path)``: ``queries_path`` is JSONL like BEIR queries
  (``{"_id": "q1", "text": "..."}``, ``id`` and ``query`` accepted too), ``qrels_path`` a TSV
  ``query-id <TAB> doc-id [<TAB> score]`` (header optional; an integer score, 1 when left out; > 0
  means relevant, 0 or less judged not relevant; parsed by ``embtune.data.beir.iter_qrels``, the
  BEIR qrels parser) whose doc ids are the ingested documents' ids (BEIR ``_id``, or a file's path
  relative to the corpus folder). Every relevant judgement, whatever its grade, gives one training
  pair; the grade is kept for evaluation (``--eval-labels``). For a relevant document the positive
  is its best chunk under the base model (highest cosine with the query); a one-chunk document
  needs no model.
* ``LabelPairs(pairs_path=...)``: an anchor/positive[/negative...] JSONL, CSV or TSV file read with
  ``embtune.data.load_pairs``; a positive whose text is a chunk's text takes that chunk's id and
  document, any other positive becomes its own one-text "document" (id ``text-<hash>``).
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Collection, Sequence

import numpy as np

from embtune.corpus.types import Chunk
from embtune.data.beir import iter_qrels, read_queries
from embtune.errors import ConfigError, DataFormatError
from embtune.models.inference import encode_texts
from embtune.pairs.embeddings import chunk_embeddings
from embtune.pairs.types import Pair


def text_id(text: str) -> str:
    """Id of a positive or negative that is not a chunk: ``text-`` + 16 hex digits of sha256(text)."""
    return "text-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_label_qrels(path: str | os.PathLike, queries: dict[str, str], doc_ids: set[str],
                     empty_ids: Collection[str] = ()) -> list[tuple[str, str, int]]:
    """Relevant ``(query id, doc id, score)`` judgements of a qrels TSV, in file order.

    Each line: query id, doc id and an optional integer score (default 1); lines scoring 0 or less
    are judged not relevant and left out, the others keep their (graded) score. ``empty_ids``: ids of
    documents that exist but hold no text (BEIR keeps judgements of such documents); judgements naming
    them are returned like the others, for the caller to leave out of training. Raises
    DataFormatError naming the file and line for a wrong column count, a non-integer score, a query
    id not in ``queries``, a doc id in neither ``doc_ids`` nor ``empty_ids``, or a repeated judgement;
    naming the file when no line is relevant.
    """
    out: list[tuple[str, str, int]] = []
    example = ", ".join(repr(d) for d in sorted(doc_ids)[:3])
    for line, qid, doc_id, score in iter_qrels(path, default_score=1):
        if qid not in queries:
            raise DataFormatError(f"query id {qid!r} is not in the queries file", path=path, line=line)
        if doc_id not in doc_ids and doc_id not in empty_ids:
            raise DataFormatError(f"document id {doc_id!r} is not among the ingested documents (ids look "
                                  f"like {example})", path=path, line=line)
        if score > 0:
            out.append((qid, doc_id, score))
    if not out:
        raise DataFormatError("no relevant judgement (score > 0) in the qrels file", path=path)
    return out


class LabelPairs:
    """Builder of pairs from user labels (see the module docstring)."""

    def __init__(self, queries_path: str | os.PathLike | None = None,
                 qrels_path: str | os.PathLike | None = None, *, pairs_path: str | os.PathLike | None = None,
                 batch_size: int = 64, show_progress: bool = True, empty_doc_ids: Collection[str] = ()):
        """Give ``queries_path`` and ``qrels_path``, or ``pairs_path`` alone; ConfigError otherwise.

        ``empty_doc_ids``: documents with no text (no chunk) that the qrels may name; their judgements
        give no pair (nothing to train on) instead of an unknown-id error."""
        if pairs_path is not None and (queries_path is not None or qrels_path is not None):
            raise ConfigError("LabelPairs takes either queries_path + qrels_path, or pairs_path, not both")
        if pairs_path is None and (queries_path is None or qrels_path is None):
            raise ConfigError("LabelPairs needs queries_path and qrels_path (or pairs_path)")
        self.queries_path = Path(queries_path) if queries_path is not None else None
        self.qrels_path = Path(qrels_path) if qrels_path is not None else None
        self.pairs_path = Path(pairs_path) if pairs_path is not None else None
        self.batch_size, self.show_progress = batch_size, show_progress
        self.empty_doc_ids = frozenset(empty_doc_ids)

    def build(self, chunks: Sequence[Chunk], model: Any = None, embeddings: Any = None) -> list[Pair]:
        """Pairs with ``builder="labels"``.

        In: the corpus chunks; ``model`` the base SentenceTransformer (needed when a labelled
        document has several chunks); optional ``embeddings`` of all chunks (one normalised row per
        chunk, e.g. from ``embtune.pairs.embeddings.encode_chunks``) to skip re-encoding. Out: one
        Pair per relevant (query, document) judgement, in qrels order, or one per row of the pairs
        file. Raises DataFormatError (file:line) for bad labels, ConfigError when a model is needed
        and missing.
        """
        if self.pairs_path is not None:
            return self._from_pairs_file(chunks)
        return self._from_qrels(chunks, model, embeddings)

    def _from_qrels(self, chunks: Sequence[Chunk], model: Any, embeddings: Any) -> list[Pair]:
        queries = read_queries(self.queries_path)
        by_doc: dict[str, list[int]] = defaultdict(list)
        for i, chunk in enumerate(chunks):
            by_doc[chunk.doc_id].append(i)
        judgements = [j for j in read_label_qrels(self.qrels_path, queries, set(by_doc), self.empty_doc_ids)
                      if j[1] in by_doc]
        multi = [(q, d) for q, d, _ in judgements if len(by_doc[d]) > 1]
        best: dict[tuple[str, str], int] = {}
        if multi:
            if model is None:
                raise ConfigError("LabelPairs.build needs the base model to choose the best chunk of "
                                  f"documents that have several chunks (e.g. {multi[0][1]!r})")
            best = self._best_chunks(multi, queries, by_doc, chunks, model, embeddings)
        pairs = []
        for qid, doc_id, _ in judgements:
            chunk = chunks[best.get((qid, doc_id), by_doc[doc_id][0])]
            pairs.append(Pair(query=queries[qid], positive=chunk.text, positive_id=chunk.id, doc_id=doc_id,
                              builder="labels"))
        return pairs

    def _best_chunks(self, multi, queries, by_doc, chunks, model, embeddings) -> dict[tuple[str, str], int]:
        """For each (query, multi-chunk doc), the index of the chunk with the highest cosine."""
        qids = list(dict.fromkeys(q for q, _ in multi))
        q_emb = encode_texts(model, [queries[q] for q in qids], "query", batch_size=self.batch_size,
                             show_progress=self.show_progress)
        q_row = {q: i for i, q in enumerate(qids)}
        if embeddings is not None:
            c_emb = chunk_embeddings(model, chunks, embeddings)
            c_row = {i: i for d in {d for _, d in multi} for i in by_doc[d]}
        else:
            needed = sorted({i for _, d in multi for i in by_doc[d]})
            c_emb = encode_texts(model, [chunks[i].text for i in needed], "document", batch_size=self.batch_size,
                                 show_progress=self.show_progress)
            c_row = {i: r for r, i in enumerate(needed)}
        out = {}
        for qid, doc_id in multi:
            candidates = by_doc[doc_id]
            scores = c_emb[[c_row[i] for i in candidates]] @ q_emb[q_row[qid]]
            out[(qid, doc_id)] = candidates[int(np.argmax(scores))]
        return out

    def _from_pairs_file(self, chunks: Sequence[Chunk]) -> list[Pair]:
        from embtune.data import load_pairs

        data = load_pairs(self.pairs_path)
        if data.kind == "labelled":
            raise DataFormatError("LabelPairs needs anchor/positive pairs; this file has sentence1, "
                                  "sentence2, label (scored pairs)", path=self.pairs_path)
        by_text = {}
        for chunk in chunks:
            by_text.setdefault(chunk.text.strip(), chunk)
        negative_cols = [c for c in data.columns if c.startswith("negative")]
        pairs = []
        for row in data.rows:
            positive = row["positive"]
            chunk = by_text.get(positive.strip())
            pid = chunk.id if chunk else text_id(positive)
            negatives = [row[c] for c in negative_cols]
            neg_ids = [by_text[n.strip()].id if n.strip() in by_text else text_id(n) for n in negatives]
            pairs.append(Pair(query=row["anchor"], positive=positive, positive_id=pid,
                              doc_id=chunk.doc_id if chunk else pid, builder="labels",
                              negatives=negatives, negative_ids=neg_ids))
        return pairs
