"""Load a BEIR-format folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Layout (as published by BEIR and MTEB)::

    folder/corpus.jsonl     {"_id": "4983", "title": "...", "text": "..."}   one document per line
    folder/queries.jsonl    {"_id": "1", "text": "..."}                       one query per line
    folder/qrels/test.tsv   query-id <TAB> corpus-id <TAB> score              header line optional

Qrels scores are graded integers kept as read (0 = judged not relevant, 1, 2, ... = relevant, higher
is more relevant; nDCG weighs them, see ``embtune.eval.metrics``). ``iter_qrels`` is the one parser of
qrels TSV lines; ``read_qrels`` here and ``embtune.pairs.labels.read_label_qrels`` (user labels, where
the score column may be left out) both use it. Likewise ``iter_corpus`` is the one reader of
corpus.jsonl lines (``load_beir`` here, ``embtune.corpus.readers.read_beir`` for chunking) and
``read_queries`` the one reader of queries files.

A document's text is ``(title + " " + text).strip()`` as in BEIR/MTEB. Every problem (bad JSON, a
missing ``_id``/``text``, a duplicate id, a qrels line with the wrong column count, a non-integer
score, or naming a query or document that does not exist) raises DataFormatError naming the file and
line; nothing is dropped silently. Documents may be empty (some BEIR corpora have such entries);
queries may not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Container, Iterator

from embtune.data._io import iter_jsonl, iter_lines, require_file
from embtune.errors import DataFormatError

_QUERY_ID_NAMES = {"query-id", "query_id", "qid", "query"}


@dataclass
class BeirData:
    """A BEIR dataset in memory.

    ``corpus`` maps doc id → text (title and body joined), ``titles`` doc id → title, ``queries``
    query id → text, ``qrels`` split name → {query id → {doc id → integer score}}, every judgement
    kept with its score (0 included). A document counts as relevant to a query when its score is > 0.
    """

    folder: Path
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]
    titles: dict[str, str] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        """Names of the qrels splits found (sorted), e.g. ``["dev", "test", "train"]``."""
        return sorted(self.qrels)

    def split_qrels(self, split: str) -> dict[str, dict[str, int]]:
        """Return ``{query id: {doc id: score}}`` of one split; DataFormatError if it does not exist."""
        if split not in self.qrels:
            have = ", ".join(self.splits) or "none"
            raise DataFormatError(
                f"no qrels split {split!r} (splits found: {have})", path=self.folder / "qrels"
            )
        return self.qrels[split]

    def pairs(self, split: str = "train") -> list[tuple[str, str]]:
        """Return ``(query text, document text)`` for every qrels entry of ``split`` with score > 0.

        Order follows the qrels file. DataFormatError if the split does not exist.
        """
        return [
            (self.queries[qid], self.corpus[doc_id])
            for qid, docs in self.split_qrels(split).items()
            for doc_id, score in docs.items()
            if score > 0
        ]


def _doc_id(obj: dict[str, Any], path: Path, line: int) -> str:
    if "_id" not in obj:
        raise DataFormatError('missing "_id"', path=path, line=line)
    value = obj["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f'"_id" must be a string, got {type(value).__name__}', path=path, line=line)
    value = str(value)
    if not value.strip():
        raise DataFormatError('"_id" is empty', path=path, line=line)
    return value


def _text_field(obj: dict[str, Any], key: str, path: Path, line: int, required: bool) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DataFormatError(f'missing "{key}"', path=path, line=line)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DataFormatError(f'"{key}" must be a string, got {type(value).__name__}', path=path, line=line)
    return value


def iter_corpus(path: str | os.PathLike) -> Iterator[tuple[int, str, str, str]]:
    """The one reader of a BEIR ``corpus.jsonl``: yield ``(line number, doc id, title, text)`` in file order.

    The rules of every line: a JSON object (blank lines skipped) with ``"_id"`` (a non-empty string or
    an integer, given as a string), ``"text"`` (a string, possibly empty: some BEIR corpora have
    such entries; what an empty document means is the caller's choice) and an optional ``"title"``
    (a string; missing or null gives ""). Title and text are yielded as written (not stripped or
    joined). DataFormatError naming the file and line for bytes that are not UTF-8, bad JSON, a line
    that is not an object, a missing or empty id, a missing or non-string text or title, or an id
    seen on an earlier line; naming the file when it is missing, empty or has no record.
    `load_beir` (evaluation) and ``embtune.corpus.readers.read_beir`` (documents to chunk) both read
    corpora with it.
    """
    path = require_file(path)
    seen: set[str] = set()
    for line, obj in iter_jsonl(path):
        doc_id = _doc_id(obj, path, line)
        if doc_id in seen:
            raise DataFormatError(f"duplicate document id {doc_id!r}", path=path, line=line)
        seen.add(doc_id)
        title = _text_field(obj, "title", path, line, required=False)
        text = _text_field(obj, "text", path, line, required=True)
        yield line, doc_id, title, text


def _read_corpus(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({doc id: (title + " " + text).strip()}, {doc id: title})`` of a corpus.jsonl (`iter_corpus`)."""
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for _, doc_id, title, text in iter_corpus(path):
        corpus[doc_id] = (title + " " + text).strip()
        titles[doc_id] = title
    return corpus, titles


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """``{query id: text}`` of a queries JSONL file, in file order: the one queries reader (a BEIR
    folder's queries.jsonl, ``--queries`` of from-corpus and label, the sample questions).

    Each line is an object with the id in ``"_id"`` (or ``"id"``; a string or an integer) and the text
    in ``"text"`` (or ``"query"``), stripped. DataFormatError naming the file and line for bad JSON, a
    missing or empty id, a repeated id, a missing, non-string or blank text; naming the file when it
    is missing.
    """
    path = require_file(path)
    queries: dict[str, str] = {}
    for line, obj in iter_jsonl(path):
        id_key = next((k for k in ("_id", "id") if k in obj), "_id")
        qid = _doc_id({"_id": obj[id_key]} if id_key in obj else {}, path, line)
        if qid in queries:
            raise DataFormatError(f"duplicate query id {qid!r}", path=path, line=line)
        text_key = next((k for k in ("text", "query") if k in obj), "text")
        text = _text_field(obj, text_key, path, line, required=True).strip()
        if not text:
            raise DataFormatError(f"query {qid!r} has empty text", path=path, line=line)
        queries[qid] = text
    return queries


def _is_header(cols: list[str]) -> bool:
    """A first line is a header when it names the query-id column and has no integer score."""
    if cols[0].lower() not in _QUERY_ID_NAMES:
        return False
    if len(cols) < 3:
        return True
    try:
        int(cols[2])
    except ValueError:
        return True
    return False


def iter_qrels(path: str | os.PathLike, *, default_score: int | None = None
               ) -> Iterator[tuple[int, str, str, int]]:
    """Parse a qrels TSV: yield ``(line number, query id, doc id, integer score)`` in file order.

    Accepted lines: ``query-id <TAB> doc-id <TAB> score`` with an integer score (negative and 0
    mean not relevant); with ``default_score`` also ``query-id <TAB> doc-id``, scored
    ``default_score``. Blank lines are skipped; line 1 may be a header (first column ``query-id``,
    ``query_id``, ``qid`` or ``query`` and no integer score). DataFormatError naming the file and
    line for a wrong column count, a non-integer score or a repeated (query, doc) pair, naming the
    file when it is missing or empty. Ids are not checked here (the callers know the valid ones).
    """
    path = require_file(path)
    widths = (3,) if default_score is None else (2, 3)
    seen: set[tuple[str, str]] = set()
    for line, text in iter_lines(path):
        if not text.strip():
            continue
        cols = [c.strip() for c in text.split("\t")]
        if len(cols) not in widths:
            expected = ("3 tab-separated columns (query-id, corpus-id, score)" if default_score is None
                        else "2 or 3 tab-separated columns (query-id, doc-id[, score])")
            raise DataFormatError(f"expected {expected}, got {len(cols)}", path=path, line=line)
        if line == 1 and _is_header(cols):
            continue
        qid, doc_id = cols[0], cols[1]
        try:
            score = int(cols[2]) if len(cols) == 3 else default_score
        except ValueError:
            raise DataFormatError(f"score {cols[2]!r} is not an integer", path=path, line=line) from None
        if (qid, doc_id) in seen:
            raise DataFormatError(f"duplicate judgement for ({qid!r}, {doc_id!r})", path=path, line=line)
        seen.add((qid, doc_id))
        yield line, qid, doc_id, score


def read_qrels(
    path: str | os.PathLike, queries: Container[str], corpus: Container[str]
) -> dict[str, dict[str, int]]:
    """Read one BEIR qrels TSV into ``{query id: {doc id: integer score}}`` (file order, 0s kept).

    Lines as ``iter_qrels`` accepts without a default score: exactly three tab-separated columns,
    header optional. Every query id must be in ``queries`` and every doc id in ``corpus`` (the
    dicts, or any containers of ids). Any violation raises DataFormatError naming the file and
    line; a file with no judgement raises one naming the file.
    """
    qrels: dict[str, dict[str, int]] = {}
    for line, qid, doc_id, score in iter_qrels(path):
        if qid not in queries:
            raise DataFormatError(f"query id {qid!r} is not in queries.jsonl", path=path, line=line)
        if doc_id not in corpus:
            raise DataFormatError(f"corpus id {doc_id!r} is not in corpus.jsonl", path=path, line=line)
        qrels.setdefault(qid, {})[doc_id] = score
    if not qrels:
        raise DataFormatError("qrels file has no judgements", path=path)
    return qrels


def load_beir(folder: str | os.PathLike) -> BeirData:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``) into a BeirData.

    Every ``qrels/*.tsv`` becomes a split named after the file (``train.tsv`` → ``"train"``).
    Raises DataFormatError naming the path when the folder, a file or the qrels folder is missing
    or empty, and naming the file and line for any malformed or inconsistent line.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataFormatError("BEIR folder does not exist", path=folder)
    if not folder.is_dir():
        raise DataFormatError("is not a folder (expected a BEIR folder with corpus.jsonl)", path=folder)
    corpus, titles = _read_corpus(folder / "corpus.jsonl")
    queries = read_queries(folder / "queries.jsonl")
    qrels_dir = folder / "qrels"
    if not qrels_dir.is_dir():
        raise DataFormatError("missing qrels folder (expected qrels/<split>.tsv)", path=qrels_dir)
    files = sorted(qrels_dir.glob("*.tsv"))
    if not files:
        raise DataFormatError("no qrels/<split>.tsv file", path=qrels_dir)
    qrels = {f.stem: read_qrels(f, queries, corpus) for f in files}
    return BeirData(folder=folder, corpus=corpus, queries=queries, qrels=qrels, titles=titles)
