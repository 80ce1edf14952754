"""The run folder's JSONL files: chunks.jsonl, pairs.jsonl, eval.jsonl (formats in corpus/INTERFACE.md).

Writers stream one JSON object per line into a temporary file beside the target and rename it into
place (a reader, or a rerun after kill -9, sees the old file or the new one, never half of one).
Readers check every line and raise DataFormatError naming the file and line, so a hand-edited
pairs.jsonl fed to ``embtune train`` fails with a message, not a traceback.
"""
from __future__ import annotations

import json
import os
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from embtune.data._io import iter_jsonl, iter_jsonl_at, read_jsonl_at
from embtune.errors import DataFormatError
from embtune.utils.atomic import atomic_file

if TYPE_CHECKING:
    from embtune.corpus.types import Chunk
    from embtune.pairs.types import Pair

BEFORE = "work/before.json"
"""The base model's evaluation of a run (metrics and per-query values), relative to the run folder."""
AFTER = "work/after.json"
"""The shipped model's evaluation of a run, relative to the run folder."""
CHUNK_FIELDS = ("id", "doc_id", "text", "title", "headings", "source")
PAIR_FIELDS = ("query", "positive", "positive_id", "doc_id", "builder", "negatives", "negative_ids")
EVAL_FIELDS = ("query_id", "query", "relevant")
EVAL_OPTIONAL = ("grades", "unretrievable", "signal")
"""eval.jsonl may also hold ``grades``: {relevant chunk id: integer qrels score}, written only for graded
labels (a relevant chunk missing from it, or a line without it, has score 1), ``unretrievable``:
{document id: integer qrels score} for labelled documents that have no text, hence no chunk (they
count as misses; ``relevant`` may then be empty), and ``signal``: the heuristic signal a validation
pseudo-query came from (``embtune.pipeline.selection``)."""


def as_record(obj: Any, fields: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{field: value}`` of a dict or an object with those attributes (Chunk, Pair); lists copied.
    Each ``optional`` field is added only when ``obj`` has it and it is not None."""
    get = obj.get if isinstance(obj, dict) else (lambda name: getattr(obj, name))
    record = {}
    for name in fields:
        value = get(name)
        record[name] = list(value) if isinstance(value, (list, tuple)) else value
    for name in optional:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            record[name] = value
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


def read_chunks(path: str | os.PathLike, fields: tuple[str, ...] = CHUNK_FIELDS) -> list[dict[str, Any]]:
    """Read chunks.jsonl into a list of dicts with ``fields`` (default: all CHUNK_FIELDS); DataFormatError
    on a bad line or a repeated chunk id. Every line is checked in full whatever ``fields`` keeps, so
    ``fields=("id", "doc_id")`` validates the same file while leaving the texts out of memory."""
    path = Path(path)
    chunks, seen = [], set()
    for line, record in iter_jsonl(path):
        _check_chunk(record, seen, path, line)
        chunks.append({k: record[k] for k in fields})
    return chunks


def to_chunks(records: Sequence[dict[str, Any]]) -> list["Chunk"]:
    """The ``embtune.corpus.Chunk`` objects of chunk records (``read_chunks``), in order."""
    from embtune.corpus.types import Chunk

    return [Chunk.from_dict(record) for record in records]


def _check_chunk(record: dict[str, Any], seen: set[str], path: Path, line: int) -> None:
    """DataFormatError unless ``record`` is a valid chunk whose id is not in ``seen``; adds the id."""
    _need(record, CHUNK_FIELDS, path, line)
    for name in ("id", "doc_id", "text"):
        _text(record, name, path, line)
    if record["id"] in seen:
        raise DataFormatError(f"duplicate chunk id {record['id']!r}", path=path, line=line)
    seen.add(record["id"])


class ChunkTexts(Sequence[str]):
    """The ``text`` of every chunk of a chunks.jsonl, read from the file when indexed (bounded memory).

    Building it reads the file once and checks every line as ``read_chunks`` does (DataFormatError
    naming the file and line), keeping per chunk only its line's byte offset and line number and its
    text's length in characters (``lengths``, int64), 24 bytes a chunk; ``texts[i]`` (an int) reads
    chunk ``i``'s text again. The file must not change while the object is used (a line that no longer
    parses raises DataFormatError). Use as a context manager, or call ``close()``, to close the file.
    """

    def __init__(self, path: str | os.PathLike):
        """Index ``path``; DataFormatError on a bad line, a repeated id or a file with no chunk."""
        self.path = Path(path)
        offsets, lines, lengths = array("q"), array("q"), array("q")
        seen: set[str] = set()
        for line, offset, record in iter_jsonl_at(self.path):
            _check_chunk(record, seen, self.path, line)
            offsets.append(offset)
            lines.append(line)
            lengths.append(len(record["text"]))
        del seen
        self._offsets = np.frombuffer(offsets, dtype=np.int64)
        self._lines = np.frombuffer(lines, dtype=np.int64)
        self.lengths = np.frombuffer(lengths, dtype=np.int64)
        self._fh = None

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index):  # type: ignore[override]
        """Chunk ``index``'s text (an int; negative counts from the end); a slice gives a list."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # IndexError when out of range
        if self._fh is None:
            self._fh = open(self.path, "rb")
        line = int(self._lines[index])
        return read_jsonl_at(self._fh, int(self._offsets[index]), self.path, line)["text"]

    def close(self) -> None:
        """Close the file (reopened by the next read)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ChunkTexts":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_pairs(path: str | os.PathLike) -> list["Pair"]:
    """Read a from-corpus pairs.jsonl into ``embtune.pairs.Pair`` objects (``negatives`` and
    ``negative_ids`` lists of equal length); DataFormatError naming the file and line on a malformed
    record."""
    from embtune.pairs.types import Pair

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
        pairs.append(Pair.from_dict(record))
    return pairs


def write_pairs(path: str | os.PathLike, pairs: Iterable["Pair"]) -> int:
    """Write ``pairs`` (``embtune.pairs.Pair``) as a pairs.jsonl, atomically; returns the count."""
    return write_jsonl(path, (pair.to_dict() for pair in pairs))


def _grades(value: Any, relevant: list[str], path: Path, line: int) -> dict[str, int]:
    """The ``grades`` field of an eval.jsonl line, checked: {relevant chunk id: int > 0}."""
    ids = set(relevant)
    if not isinstance(value, dict) or not all(
            k in ids and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in value.items()):
        raise DataFormatError("field 'grades' must map relevant chunk ids to positive integer scores",
                              path=path, line=line)
    return value


def _unretrievable(value: Any, path: Path, line: int) -> dict[str, int]:
    """The ``unretrievable`` field of an eval.jsonl line, checked: {document id: int > 0}."""
    if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value.values()):
        raise DataFormatError("field 'unretrievable' must map document ids to positive integer scores",
                              path=path, line=line)
    return value


def read_eval(path: str | os.PathLike, chunk_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Read eval.jsonl (``query_id``, ``query``, ``relevant`` chunk ids, optional ``grades``: {relevant id:
    integer score > 0} and ``unretrievable``: {document id without chunks: integer score > 0}; ``relevant``
    may be empty only beside a non-empty ``unretrievable``). With ``chunk_ids``, a relevant id that is not
    a chunk raises DataFormatError naming the file and line; so does a ``grades`` entry that is not a
    relevant id with a positive int, or a bad ``unretrievable``."""
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
        unretrievable = _unretrievable(record["unretrievable"], path, line) if "unretrievable" in record else {}
        if not relevant and not unretrievable:
            raise DataFormatError("field 'relevant' is empty", path=path, line=line)
        if chunk_ids is not None:
            unknown = [r for r in relevant if r not in chunk_ids]
            if unknown:
                raise DataFormatError(f"relevant chunk id {unknown[0]!r} is not in chunks.jsonl", path=path,
                                      line=line)
        entry = {"query_id": qid, "query": record["query"], "relevant": relevant}
        if "grades" in record:
            entry["grades"] = _grades(record["grades"], relevant, path, line)
        if unretrievable:
            entry["unretrievable"] = unretrievable
        if "signal" in record:
            entry["signal"] = _text(record, "signal", path, line)
        queries.append(entry)
    return queries
