"""Line readers shared by the data loaders: UTF-8 checked line by line, errors name file and line.

Files are read in binary and decoded one physical line at a time, so a corpus of any size streams
and a bad byte is reported with its 1-based line number instead of a bare ``UnicodeDecodeError``.
"""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from embtune.errors import DataFormatError


def require_file(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path; DataFormatError naming it if it is missing, not a file, or empty."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError("file does not exist", path=path)
    if not path.is_file():
        raise DataFormatError("is not a file", path=path)
    if path.stat().st_size == 0:
        raise DataFormatError("file is empty", path=path)
    return path


def iter_lines(path: str | os.PathLike, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every physical line of a UTF-8 file (1-based numbers).

    A UTF-8 byte-order mark on the first line is dropped. Line endings (``\\n`` or ``\\r\\n``) are
    removed unless ``keep_ends`` (the CSV reader needs them for quoted multi-line fields). Bytes that
    are not UTF-8 raise DataFormatError naming the file and line.
    """
    for number, _, text in iter_lines_at(path, keep_ends):
        yield number, text


def iter_lines_at(path: str | os.PathLike, keep_ends: bool = False) -> Iterator[tuple[int, int, str]]:
    """``iter_lines`` that also gives where each line starts: yields ``(line_number, byte_offset, text)``.

    ``byte_offset`` is the position of the line's first byte in the file (0 for the first line, BOM
    included), so ``read_jsonl_at`` can read that line again without keeping its text.
    """
    path = Path(path)
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            yield number, start, _decode(raw, path, number, keep_ends)


def _decode(raw: bytes, path: Path, number: int, keep_ends: bool = False) -> str:
    """One raw line as text (BOM dropped on line 1, line ending dropped unless ``keep_ends``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
            path=path,
            line=number,
        ) from None
    if number == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if not keep_ends:
        text = text.rstrip("\r\n")
    return text


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSONL file.

    Blank lines are skipped. A line that is not valid JSON, or is JSON but not an object, raises
    DataFormatError naming the file and line. A file with no record at all raises DataFormatError
    naming the file.
    """
    for number, _, obj in iter_jsonl_at(path):
        yield number, obj


def iter_jsonl_at(path: str | os.PathLike) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``iter_jsonl`` that also gives each record's byte offset: yields ``(line_number, offset, object)``.

    Same checks and errors as ``iter_jsonl``; ``read_jsonl_at(fh, offset, ...)`` reads the record again.
    """
    path = require_file(path)
    seen = 0
    for number, offset, text in iter_lines_at(path):
        if not text.strip():
            continue
        yield number, offset, _parse(text, path, number)
        seen += 1
    if seen == 0:
        raise DataFormatError("file has no records (only blank lines)", path=path)


def _parse(text: str, path: Path, number: int) -> dict[str, Any]:
    """One JSONL line as a dict; DataFormatError naming the file and line otherwise."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"invalid JSON ({exc.msg} at column {exc.colno})", path=path, line=number
        ) from None
    if not isinstance(obj, dict):
        raise DataFormatError(
            f"expected a JSON object per line, got {type(obj).__name__}", path=path, line=number
        )
    return obj


def read_jsonl_at(fh: BinaryIO, offset: int, path: str | os.PathLike, line: int) -> dict[str, Any]:
    """The JSON object of the line starting at byte ``offset`` of the open binary file ``fh``.

    ``path`` and ``line`` (from ``iter_jsonl_at``) only name the place in errors: DataFormatError if
    the line is no longer a JSON object (the file changed since it was indexed).
    """
    fh.seek(offset)
    return _parse(_decode(fh.readline(), Path(path), line), Path(path), line)


def iter_csv_records(lines: Iterable[str], path: str | os.PathLike, delimiter: str = ",",
                     quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[int, list[str]]]:
    """The one CSV loop: ``(line number where the record starts, cells)`` for each non-blank record of
    ``lines`` (strings keeping their line ends; a quoted cell may span lines), parsed strictly.

    DataFormatError naming ``path`` and the record's first line for malformed CSV. csv's field size
    limit is lifted while reading (a cell may hold a whole document) and restored afterwards.
    """
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
        prev_end = 0
        while True:
            start = prev_end + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataFormatError(f"malformed CSV ({exc})", path=path, line=start) from None
            prev_end = reader.line_num
            if cells:  # a blank line; a row of empty cells is the caller's to judge
                yield start, cells
    finally:
        csv.field_size_limit(old_limit)
