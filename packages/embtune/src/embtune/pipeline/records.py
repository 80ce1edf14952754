"""The run folder's JSONL files: chunks.jsonl, pairs.jsonl, eval.jsonl (formats in corpus/INTERFACE.md).

Writers stream one JSON object per line into a temporary file beside the target and rename it into
place (a reader, or a rerun after kill -9, sees the old file or the new one, never half of one).
Readers check every line and raise DataFormatError naming the file and line, so a hand-edited
pairs.jsonl fed to ``embtune train`` fails with a message, not a traceback.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from embtune.data._io import iter_jsonl
from embtune.errors import DataFormatError
from embtune.utils.atomic import atomic_file

CHUNK_FIELDS = ("id", "doc_id", "text", "title", "headings", "source")
PAIR_FIELDS = ("query", "positive", "positive_id", "doc_id", "builder", "negatives", "negative_ids")
EVAL_FIELDS = ("query_id", "query", "relevant")


def as_record(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """``{field: value}`` of a dict or an object with those attributes (Chunk, Pair); lists copied."""
    get = obj.get if isinstance(obj, dict) else (lambda name: getattr(obj, name))
    record = {}
    for name in fields:
        value = get(name)
        record[name] = list(value) if isinstance(value, (list, tuple)) else value
    return record


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` as JSONL to ``path`` atomically (temp file + fsync + rename); returns the count.

    Raises EmbtuneError naming the path when the folder is not writable or the disk is full.
    """
    count = 0
    with atomic_file(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _need(record: dict[str, Any], fields: tuple[str, ...], path: Path, line: int) -> None:
    for name in fields:
        if name not in record:
            raise DataFormatError(f"missing field {name!r}", path=path, line=line)


def _text(record: dict[str, Any], name: str, path: Path, line: int) -> str:
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"field {name!r} must be non-empty text", path=path, line=line)
    return value


def _text_list(record: dict[str, Any], name: str, path: Path, line: int) -> list[str]:
    value = record[name]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataFormatError(f"field {name!r} must be a list of non-empty strings", path=path, line=line)
    return value


def read_chunks(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read chunks.jsonl into a list of dicts with CHUNK_FIELDS; DataFormatError on a bad line or a
    repeated chunk id."""
    path = Path(path)
    chunks, seen = [], set()
    for line, record in iter_jsonl(path):
        _need(record, CHUNK_FIELDS, path, line)
        for name in ("id", "doc_id", "text"):
            _text(record, name, path, line)
        if record["id"] in seen:
            raise DataFormatError(f"duplicate chunk id {record['id']!r}", path=path, line=line)
        seen.add(record["id"])
        chunks.append({k: record[k] for k in CHUNK_FIELDS})
    return chunks


def read_pairs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a from-corpus pairs.jsonl into dicts with PAIR_FIELDS (``negatives`` and ``negative_ids``
    lists of equal length); DataFormatError naming the file and line on a malformed record."""
    path = Path(path)
    pairs = []
    for line, record in iter_jsonl(path):
        _need(record, PAIR_FIELDS, path, line)
        _text(record, "query", path, line)
        _text(record, "positive", path, line)
        negatives = _text_list(record, "negatives", path, line)
        ids = record["negative_ids"]
        if not isinstance(ids, list) or len(ids) != len(negatives):
            raise DataFormatError("field 'negative_ids' must be a list as long as 'negatives'", path=path,
                                  line=line)
        pairs.append({k: record[k] for k in PAIR_FIELDS})
    return pairs


def read_eval(path: str | os.PathLike, chunk_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Read eval.jsonl (``query_id``, ``query``, ``relevant`` chunk ids). With ``chunk_ids``, a relevant
    id that is not a chunk raises DataFormatError naming the file and line."""
    path = Path(path)
    queries, seen = [], set()
    for line, record in iter_jsonl(path):
        _need(record, EVAL_FIELDS, path, line)
        qid = str(record["query_id"])
        if qid in seen:
            raise DataFormatError(f"duplicate query id {qid!r}", path=path, line=line)
        seen.add(qid)
        _text(record, "query", path, line)
        relevant = _text_list(record, "relevant", path, line)
        if not relevant:
            raise DataFormatError("field 'relevant' is empty", path=path, line=line)
        if chunk_ids is not None:
            unknown = [r for r in relevant if r not in chunk_ids]
            if unknown:
                raise DataFormatError(f"relevant chunk id {unknown[0]!r} is not in chunks.jsonl", path=path,
                                      line=line)
        queries.append({"query_id": qid, "query": record["query"], "relevant": relevant})
    return queries
