"""The ``EmbeddingQAFinetuneDataset`` JSON of llama-index-finetuning, read and written by embtune.

On disk (what ``EmbeddingQAFinetuneDataset.save_json`` writes, ``indent=4``)::

    {"queries": {"<qid>": "question"}, "corpus": {"<node_id>": "chunk text"},
     "relevant_docs": {"<qid>": ["<node_id>", ...]}, "mode": "text"}

llama-index-core 0.14 no longer ships the class (only llama-index-finetuning does, and that
package pins old sentence-transformers), so this module reads and writes the schema itself and
checks it: every value a string, every ``relevant_docs`` query in
``queries`` and every listed node in ``corpus``; a violation is a DataFormatError naming the file.
``QADataset`` converts to embtune training pairs (one per query and relevant node) and to a
BEIR-like ``(corpus, queries, qrels)`` for ``embtune_faiss.evaluate`` or
``embtune.eval.evaluate_retrieval``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from embtune.errors import DataFormatError
from embtune.utils.atomic import atomic_write_text

BUILDER = "llamaindex-qa"
KEYS = ("queries", "corpus", "relevant_docs")


def _str_map(obj: Any, name: str, path: str) -> dict[str, str]:
    if not isinstance(obj, dict):
        raise DataFormatError(f'"{name}" must be an object of id → text', path=path)
    for key, value in obj.items():
        if not isinstance(value, str):
            raise DataFormatError(f'"{name}"[{key!r}] must be a string, got {type(value).__name__}',
                                  path=path)
    return dict(obj)


@dataclass
class QADataset:
    """Queries, corpus and relevance of an ``EmbeddingQAFinetuneDataset``.

    ``queries`` query id → text, ``corpus`` node id → text, ``relevant_docs`` query id → node ids,
    ``mode`` as in LlamaIndex (``"text"``).
    """

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"
    source: str = field(default="<memory>", compare=False)

    def __post_init__(self) -> None:
        """Check the schema (see the module docstring); DataFormatError naming ``source``."""
        self.queries = _str_map(self.queries, "queries", self.source)
        self.corpus = _str_map(self.corpus, "corpus", self.source)
        if not isinstance(self.relevant_docs, dict):
            raise DataFormatError('"relevant_docs" must be an object of query id → [node ids]',
                                  path=self.source)
        clean: dict[str, list[str]] = {}
        for qid, docs in self.relevant_docs.items():
            if not isinstance(docs, (list, tuple)) or not all(isinstance(d, str) for d in docs):
                raise DataFormatError(f'"relevant_docs"[{qid!r}] must be a list of node ids',
                                      path=self.source)
            if qid not in self.queries:
                raise DataFormatError(f'"relevant_docs" names query {qid!r}, which is not in "queries"',
                                      path=self.source)
            missing = [d for d in docs if d not in self.corpus]
            if missing:
                raise DataFormatError(f'"relevant_docs"[{qid!r}] names node {missing[0]!r}, which is not in '
                                      f'"corpus"', path=self.source)
            clean[qid] = list(dict.fromkeys(docs))
        self.relevant_docs = clean

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "QADataset":
        """Read the JSON file at ``path`` (LlamaIndex's method name); see ``read_qa_dataset``."""
        return read_qa_dataset(path)

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write the dataset to ``path`` (LlamaIndex's method name); see ``write_qa_dataset``."""
        return write_qa_dataset(self, path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: queries, corpus, relevant_docs, mode."""
        return {"queries": dict(self.queries), "corpus": dict(self.corpus),
                "relevant_docs": {q: list(d) for q, d in self.relevant_docs.items()}, "mode": self.mode}

    def to_beir(self) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
        """``(corpus, queries, qrels)`` with score 1 for every relevant node; queries without a
        relevant node are left out of qrels."""
        qrels = {q: {d: 1 for d in docs} for q, docs in self.relevant_docs.items() if docs}
        return dict(self.corpus), dict(self.queries), qrels

    def to_pairs(self) -> list[Any]:
        """One ``embtune.pairs.Pair`` per (query, relevant node): positive = the node text,
        ``positive_id`` = ``doc_id`` = the node id, ``builder`` = ``"llamaindex-qa"``."""
        from embtune.pairs.types import Pair

        return [Pair(query=self.queries[q], positive=self.corpus[d], positive_id=d, doc_id=d, builder=BUILDER)
                for q, docs in self.relevant_docs.items() for d in docs]

    def to_training_data(self) -> Any:
        """``embtune.data.PairsData`` (anchor, positive) of ``to_pairs()`` for ``embtune.train``."""
        from embtune.data.pairs import pairs_to_training_data

        return pairs_to_training_data(self.to_pairs())

    @classmethod
    def from_beir(cls, corpus: Mapping[str, str], queries: Mapping[str, str],
                  qrels: Mapping[str, Mapping[str, int]]) -> "QADataset":
        """A dataset from BEIR-style data: relevant nodes are the qrels docs with score > 0 (LlamaIndex
        relevance is binary, so grades are not kept); only queries with at least one are kept."""
        relevant = {q: [d for d, s in docs.items() if s > 0] for q, docs in qrels.items()}
        relevant = {q: docs for q, docs in relevant.items() if docs}
        return cls(queries={q: queries[q] for q in relevant}, corpus=dict(corpus), relevant_docs=relevant)

    @classmethod
    def from_pairs(cls, pairs: Iterable[Any]) -> "QADataset":
        """A dataset from embtune Pairs (e.g. built by ``pairs_from_nodes``): node ids are the
        ``positive_id`` values, query ids ``q0``, ``q1``... (a repeated query text keeps one id and
        collects its positives)."""
        queries: dict[str, str] = {}
        by_text: dict[str, str] = {}
        corpus: dict[str, str] = {}
        relevant: dict[str, list[str]] = {}
        for pair in pairs:
            get = pair.get if isinstance(pair, Mapping) else (lambda name, p=pair: getattr(p, name))
            qid = by_text.setdefault(get("query"), f"q{len(by_text)}")
            queries[qid] = get("query")
            corpus.setdefault(str(get("positive_id")), get("positive"))
            relevant.setdefault(qid, []).append(str(get("positive_id")))
        return cls(queries=queries, corpus=corpus, relevant_docs=relevant)


def read_qa_dataset(path: str | os.PathLike) -> QADataset:
    """Read an ``EmbeddingQAFinetuneDataset`` JSON file into a QADataset; DataFormatError (naming
    the file) when it is missing, not JSON, or breaks the schema."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("file not found", path=path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataFormatError("not UTF-8 text", path=path) from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(obj, dict):
        raise DataFormatError("expected a JSON object with queries, corpus, relevant_docs", path=path)
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise DataFormatError(f'missing key(s) {", ".join(missing)}', path=path)
    mode = obj.get("mode", "text")
    if not isinstance(mode, str):
        raise DataFormatError('"mode" must be a string', path=path)
    return QADataset(queries=obj["queries"], corpus=obj["corpus"], relevant_docs=obj["relevant_docs"],
                     mode=mode, source=str(path))


def write_qa_dataset(dataset: QADataset, path: str | os.PathLike) -> Path:
    """Write ``dataset`` as ``EmbeddingQAFinetuneDataset`` JSON (indent 4, as LlamaIndex writes it)
    to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(dataset.to_dict(), indent=4, ensure_ascii=False) + "\n")
