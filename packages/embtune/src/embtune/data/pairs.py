"""Training pairs: load them from JSONL / CSV / TSV, or normalise whatever a user passes.

Accepted column sets (the first record decides, every later one must match it exactly):

* ``anchor``, ``positive``                                  → kind ``"pairs"``
* ``anchor``, ``positive`` + ``negative`` and/or ``negative_1`` .. ``negative_n``
  (numbered negatives must run 1..n without gaps)           → kind ``"triplets"``
* ``sentence1``, ``sentence2``, ``label`` (a finite float)  → kind ``"labelled"``

Columns are ordered text columns first (anchor, positive, negative, negative_1, ...; or sentence1,
sentence2), then ``label``. Text cells must be non-blank strings. Any other column, a missing
column, a blank text, a non-numeric label, bad JSON or non-UTF-8 bytes raises DataFormatError with
the file and 1-based line (for in-memory data the "file" is ``<list>`` / ``<datasets.Dataset>`` and
the line is the 1-based row number). Nothing is skipped except blank lines.

CSV files are read with Python's ``csv`` module (quoted fields may span lines; the line reported is
the one the record starts on). TSV files use tabs and no quoting: one record per line.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from embtune.data._io import iter_csv_records, iter_jsonl, iter_lines, require_file
from embtune.errors import DataFormatError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets

    from embtune.data.beir import BeirData

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
_NEGATIVE_N = re.compile(r"negative_([1-9][0-9]*)")


@dataclass
class PairsData:
    """Validated training rows.

    ``columns`` is the ordered column list, ``rows`` one dict per example with exactly those keys
    (text values are ``str``, ``label`` is ``float``), ``kind`` one of ``"pairs"``, ``"triplets"``,
    ``"labelled"``, ``source`` where the rows came from (a path, or ``<list>`` etc.).
    """

    columns: list[str]
    rows: list[dict[str, Any]]
    kind: str
    source: str | None = None

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.rows)

    @property
    def num_negatives(self) -> int:
        """How many negative columns each row has (0 for pairs and labelled data)."""
        return sum(1 for c in self.columns if c == "negative" or _NEGATIVE_N.fullmatch(c))

    def to_dataset(self) -> "datasets.Dataset":
        """Return a ``datasets.Dataset`` with the same rows and the same column order."""
        import datasets

        return datasets.Dataset.from_dict({c: [row[c] for row in self.rows] for c in self.columns})


def _schema(keys: Iterable[str], source: str, line: int) -> tuple[list[str], str]:
    """Decide (ordered columns, kind) from the keys of the first record."""
    keys = list(keys)
    present = set(keys)
    if len(present) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DataFormatError(f"column {dup!r} appears twice", path=source, line=line)
    if present & {"sentence1", "sentence2", "label"} and not present & {"anchor", "positive"}:
        for name in ("sentence1", "sentence2", "label"):
            if name not in present:
                raise DataFormatError(
                    f"missing column {name!r} (labelled pairs need sentence1, sentence2, label)",
                    path=source, line=line,
                )
        extra = sorted(present - {"sentence1", "sentence2", "label"})
        if extra:
            raise DataFormatError(f"unexpected column {extra[0]!r} in labelled pairs", path=source, line=line)
        return ["sentence1", "sentence2", "label"], "labelled"
    if not present & {"anchor", "positive"}:
        raise DataFormatError(
            f"unrecognised columns {sorted(present)}; expected anchor, positive[, negative, negative_1..n] "
            "or sentence1, sentence2, label",
            path=source,
            line=line,
        )
    for name in ("anchor", "positive"):
        if name not in present:
            raise DataFormatError(f"missing column {name!r}", path=source, line=line)
    numbered: list[int] = []
    for key in sorted(present - {"anchor", "positive", "negative"}):
        match = _NEGATIVE_N.fullmatch(key)
        if not match:
            raise DataFormatError(
                f"unexpected column {key!r} (allowed: anchor, positive, negative, negative_1..n)",
                path=source,
                line=line,
            )
        numbered.append(int(match.group(1)))
    numbered.sort()
    if numbered != list(range(1, len(numbered) + 1)):
        gap = next(i for i in range(1, len(numbered) + 2) if i not in numbered)
        raise DataFormatError(f"negative columns must run negative_1..n; 'negative_{gap}' is missing",
                              path=source, line=line)
    columns = ["anchor", "positive"] + (["negative"] if "negative" in present else [])
    columns += [f"negative_{i}" for i in numbered]
    return columns, ("triplets" if len(columns) > 2 else "pairs")


def _label(value: Any, source: str, line: int) -> float:
    if isinstance(value, bool) or value is None:
        raise DataFormatError(f"label must be a number, got {value!r}", path=source, line=line)
    try:
        label = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataFormatError(f"label {value!r} is not a number", path=source, line=line) from None
    if not math.isfinite(label):
        raise DataFormatError(f"label {value!r} is not finite", path=source, line=line)
    return label


def _validate(records: Iterable[tuple[int, dict[str, Any]]], source: str) -> PairsData:
    """Check every (line, record) against the schema of the first one; build PairsData."""
    columns: list[str] | None = None
    kind = ""
    rows: list[dict[str, Any]] = []
    first_line = 0
    for line, record in records:
        if columns is None:
            columns, kind = _schema(record.keys(), source, line)
            first_line = line
        missing = [c for c in columns if c not in record]
        if missing:
            raise DataFormatError(
                f"missing column {missing[0]!r} (columns of line {first_line}: {', '.join(columns)})",
                path=source, line=line,
            )
        extra = [k for k in record if k not in columns]
        if extra:
            raise DataFormatError(
                f"unexpected column {extra[0]!r} (columns of line {first_line}: {', '.join(columns)})",
                path=source, line=line,
            )
        row: dict[str, Any] = {}
        for col in columns:
            value = record[col]
            if col == "label":
                row[col] = _label(value, source, line)
                continue
            if not isinstance(value, str):
                raise DataFormatError(f"column {col!r} must be text, got {type(value).__name__}",
                                      path=source, line=line)
            if not value.strip():
                raise DataFormatError(f"column {col!r} is empty", path=source, line=line)
            row[col] = value
        rows.append(row)
    if columns is None:
        raise DataFormatError("no rows", path=source)
    return PairsData(columns=columns, rows=rows, kind=kind, source=source)


def pairs_to_training_data(pairs: Iterable[Any], source: str = "<pairs>") -> PairsData:
    """Training rows of query/positive pairs: the one conversion from a pair to ``PairsData``.

    In: ``embtune.pairs.Pair`` objects or dicts with ``query``, ``positive`` and optional
    ``negatives`` (a from-corpus pairs.jsonl record), and where they came from. Out: PairsData with
    columns anchor, positive, negative_1..k, k the fewest negatives any pair has (one warning when
    pairs differ: the first k of each are used), each text checked as a pairs file's would be.
    DataFormatError naming ``source`` for no pairs or an empty text.
    """
    pairs = list(pairs)
    if not pairs:
        raise DataFormatError("no pairs to train on", path=source)
    get = [(p.get if isinstance(p, dict) else (lambda name, p=p: getattr(p, name, None))) for p in pairs]
    counts = [len(g("negatives") or []) for g in get]
    k = min(counts)
    if k < max(counts):
        logger.warning("%s: pairs have %d to %d negatives; training uses the first %d of each", source, k,
                       max(counts), k)
    rows = []
    for g in get:
        row = {"anchor": g("query"), "positive": g("positive")}
        row.update({f"negative_{i + 1}": (g("negatives") or [])[i] for i in range(k)})
        rows.append(row)
    return _validate(enumerate(rows, start=1), source)


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (start line, {header: cell}) for each record of a CSV/TSV file after the header."""
    lines = (text for _, text in iter_lines(path, keep_ends=True))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    header: list[str] | None = None
    for start, cells in iter_csv_records(lines, path, delimiter, quoting):
        if header is None:
            header = [c.strip() for c in cells]
            _schema(header, str(path), start)
            continue
        if len(cells) != len(header):
            raise DataFormatError(f"expected {len(header)} columns ({', '.join(header)}), got {len(cells)}",
                                  path=path, line=start)
        yield start, dict(zip(header, cells))
    if header is None:
        raise DataFormatError("file has no header row", path=path)


def load_pairs(path: str | os.PathLike) -> PairsData:
    """Read training rows from ``.jsonl``/``.ndjson``, ``.csv`` or ``.tsv`` (chosen by extension).

    Returns a PairsData (see the module docstring for the accepted columns). Raises DataFormatError
    naming the file, and the line where there is one, for a missing/empty file, an unsupported
    extension, or any malformed record.
    """
    path = require_file(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        data = _validate(iter_jsonl(path), str(path))
    elif suffix in CSV_SUFFIXES:
        data = _validate(_iter_csv(path, "\t" if suffix == ".tsv" else ","), str(path))
    else:
        raise DataFormatError(
            f"unsupported extension {path.suffix!r} (use .jsonl, .csv or .tsv, or a BEIR folder)", path=path
        )
    return data


def _tuple_record(item: Any, width: int, labelled: bool) -> dict[str, Any]:
    if labelled:
        return {"sentence1": item[0], "sentence2": item[1], "label": item[2]}
    record = {"anchor": item[0], "positive": item[1]}
    if width == 3:
        record["negative"] = item[2]
    elif width > 3:
        record.update({f"negative_{i}": item[i + 1] for i in range(1, width - 1)})
    return record


def _from_list(items: list[Any]) -> PairsData:
    source = "<list>"
    if not items:
        raise DataFormatError("no rows (empty list)", path=source)
    if all(isinstance(x, dict) for x in items):
        return _validate(((i + 1, x) for i, x in enumerate(items)), source)
    first = items[0]
    if not isinstance(first, (tuple, list)):
        raise DataFormatError(
            f"rows must be tuples or dicts, got {type(first).__name__}", path=source, line=1
        )
    width = len(first)
    if width < 2:
        raise DataFormatError(
            f"a row needs at least (anchor, positive), got {width} item(s)", path=source, line=1
        )
    labelled = width == 3 and isinstance(first[2], (int, float)) and not isinstance(first[2], bool)

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, item in enumerate(items, start=1):
            if not isinstance(item, (tuple, list)):
                raise DataFormatError(f"rows must be tuples, got {type(item).__name__}", path=source, line=i)
            if len(item) != width:
                raise DataFormatError(
                    f"expected {width} items like row 1, got {len(item)}", path=source, line=i
                )
            yield i, _tuple_record(item, width, labelled)

    return _validate(records(), source)


def as_pairs_data(data: Any) -> PairsData:
    """Normalise training data passed by a user into a validated PairsData.

    Accepts: a PairsData (returned as is); a path to a ``.jsonl``/``.csv``/``.tsv`` file
    (load_pairs); a path to a BEIR folder with ``corpus.jsonl`` (its ``train`` qrels as
    anchor/positive pairs); a BeirData (same); a ``datasets.Dataset``; a list of dicts; a list of
    tuples ``(anchor, positive[, negative ...])`` where a 3-tuple whose third item is a number is read
    as ``(sentence1, sentence2, label)``. Raises DataFormatError for malformed data, TypeError for an
    unsupported type.
    """
    from embtune.data.beir import BeirData, load_beir

    if isinstance(data, PairsData):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            if not (path / "corpus.jsonl").exists():
                raise DataFormatError("folder has no corpus.jsonl (expected a BEIR folder or a pairs file)",
                                      path=path)
            return _from_beir(load_beir(path))
        return load_pairs(path)
    if isinstance(data, BeirData):
        return _from_beir(data)
    if type(data).__module__.startswith("datasets") and hasattr(data, "column_names"):
        return _validate(((i + 1, row) for i, row in enumerate(data)), "<datasets.Dataset>")
    if isinstance(data, (list, tuple)):
        return _from_list(list(data))
    raise TypeError(
        f"cannot use {type(data).__name__} as training data (pass a path, BeirData, Dataset or list)"
    )


def _from_beir(beir: "BeirData") -> PairsData:
    pairs = beir.pairs("train")
    if not pairs:
        raise DataFormatError(
            "train split has no judgement with score > 0", path=beir.folder / "qrels" / "train.tsv"
        )
    source = f"<train pairs of {beir.folder}>"
    return _validate(((i + 1, {"anchor": q, "positive": d}) for i, (q, d) in enumerate(pairs)), source)
