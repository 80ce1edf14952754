"""One reader per file format; each turns one file into Documents.

Text formats receive the already-decoded text (``ingest`` decodes and skips undecodable/binary
files); PDF readers get the path. Record formats (JSONL, JSON, CSV, BEIR) give one Document per
record: the text comes from the first of ``TEXT_FIELDS`` present, the title from ``title``, the id
from ``id`` or ``_id`` (else ``<file>#<line>``). A record without any text field, or a line that is
not JSON, raises DataFormatError naming the file and line; a record whose text is blank is skipped.
A BEIR corpus is read by ``embtune.data.beir.iter_corpus`` (the rules of BEIR lines have one owner).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from embtune.corpus.html_text import html_to_text
from embtune.corpus.structure import find_headings
from embtune.corpus.types import Document
from embtune.data._io import iter_csv_records
from embtune.data.beir import iter_corpus
from embtune.errors import DataFormatError

TEXT_FIELDS = ("text", "content", "body")
ID_FIELDS = ("id", "_id")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)


def normalise_text(text: str) -> str:
    """Unix newlines, no NUL bytes, form feeds as paragraph breaks."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").replace("\x0c", "\n\n")


def read_plain(path: Path, rel: str, text: str) -> list[Document]:
    """A ``.txt`` file: one Document, no title."""
    return [Document(doc_id=rel, text=text, title="", source=rel, kind="text")]


def read_markdown(path: Path, rel: str, text: str) -> list[Document]:
    """A ``.md`` file: YAML front matter is dropped (its ``title:`` kept), title = that or the first H1."""
    title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        found = _FRONT_TITLE.search(front.group(1))
        if found:
            title = found.group(1).strip().strip("\"'")
        text = text[front.end():]
    if not title:
        title = next((t for _, _, level, t in find_headings(text, "markdown") if level == 1), "")
    return [Document(doc_id=rel, text=text, title=title, source=rel, kind="markdown")]


def read_rst(path: Path, rel: str, text: str) -> list[Document]:
    """A ``.rst`` file: title = its first (top-level) section title."""
    headings = find_headings(text, "rst")
    title = next((t for _, _, level, t in headings if level == 1), "")
    return [Document(doc_id=rel, text=text, title=title, source=rel, kind="rst")]


def read_html(path: Path, rel: str, text: str) -> list[Document]:
    """An ``.html``/``.htm`` file: visible text with headings as Markdown lines; title from <title>/<h1>."""
    body, title = html_to_text(text)
    return [Document(doc_id=rel, text=body, title=title, source=rel, kind="html")]


def read_pdf(path: Path, rel: str, warn: Callable[[str], None]) -> list[Document]:
    """A ``.pdf`` file (pypdf): the text of all pages, pages separated by blank lines.

    Unreadable or encrypted PDFs, and pages whose text cannot be extracted, are reported with
    ``warn`` and skipped. Raises EmbtuneError when pypdf is not installed.
    """
    try:
        from pypdf import PdfReader
    except ImportError:
        from embtune.errors import EmbtuneError

        raise EmbtuneError("reading PDF files needs pypdf: pip install 'embtune[corpus]'",
                           path=path) from None
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            warn(f"skipped {rel}: the PDF is encrypted")
            return []
        pages = list(reader.pages)
    except Exception as exc:  # pypdf raises many types for damaged files; skip the file, say why
        warn(f"skipped {rel}: cannot read the PDF ({type(exc).__name__}: {exc})")
        return []
    texts = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append(page.extract_text() or "")
        except Exception as exc:  # one bad page should not lose the others
            warn(f"{rel}: page {number} skipped, its text cannot be extracted ({type(exc).__name__})")
    title = ""
    try:
        meta = reader.metadata
        title = (meta.title or "").strip() if meta is not None else ""
    except Exception:  # damaged metadata: the text is still usable
        title = ""
    text = normalise_text("\n\n".join(t.strip() for t in texts if t.strip()))
    return [Document(doc_id=rel, text=text, title=title, source=rel, kind="pdf")]


def _string_field(obj: dict[str, Any], key: str, path: Path, line: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFormatError(f'"{key}" must be a string, got {type(value).__name__}', path=path, line=line)
    return str(value)


def record_document(obj: Any, path: Path, rel: str, line: int, kind: str) -> Document | None:
    """One JSON/CSV record → Document (None when its text is blank).

    Raises DataFormatError naming the file and line if it has no text field or a non-string field.
    """
    if not isinstance(obj, dict):
        raise DataFormatError(f"expected a JSON object, got {type(obj).__name__}", path=path, line=line)
    key = next((k for k in TEXT_FIELDS if k in obj), None)
    if key is None:
        raise DataFormatError(
            f"record has no text field (expected one of {', '.join(TEXT_FIELDS)}; found "
            f"{', '.join(sorted(obj)) or 'none'})", path=path, line=line)
    text = _string_field(obj, key, path, line) or ""
    title = _string_field(obj, "title", path, line) or ""
    if not text.strip():
        return None
    doc_id = next((v for k in ID_FIELDS if (v := _string_field(obj, k, path, line)) not in (None, "")), None)
    return Document(doc_id=doc_id if doc_id is not None else f"{rel}#{line}", text=normalise_text(text),
                    title=title.strip(), source=f"{rel}:{line}", kind=kind)


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=path,
                                  line=number) from None


def read_jsonl(path: Path, rel: str, text: str, kind: str = "jsonl") -> list[Document]:
    """A ``.jsonl`` file: one Document per JSON object line (see the module docstring)."""
    docs = []
    for number, obj in _jsonl_records(path, text):
        doc = record_document(obj, path, rel, number, kind)
        if doc is not None:
            docs.append(doc)
    return docs


def read_json(path: Path, rel: str, text: str) -> list[Document]:
    """A ``.json`` file: a list of records, an object holding one (under ``documents``/``data``/...),
    or one record. Records carry no line of their own; ``<file>#<n>`` ids count records from 1."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=path,
                              line=exc.lineno) from None
    if isinstance(obj, dict):
        lists = [v for k, v in obj.items() if k in ("documents", "docs", "data", "records", "items", "corpus")
                 and isinstance(v, list)]
        records = lists[0] if lists else [obj]
    elif isinstance(obj, list):
        records = obj
    else:
        raise DataFormatError(f"expected a JSON object or list, got {type(obj).__name__}", path=path, line=1)
    docs = []
    for number, record in enumerate(records, start=1):
        doc = record_document(record, path, rel, number, "json")
        if doc is not None:
            doc.source = f"{rel}[{number - 1}]"
            docs.append(doc)
    return docs


def read_csv(path: Path, rel: str, text: str) -> list[Document]:
    """A ``.csv`` file with a header row naming a text column (``text``/``content``/``body``,
    any case) and optional ``title`` and ``id``/``_id`` columns; one Document per row."""
    docs: list[Document] = []
    header: list[str] | None = None
    for line, cells in iter_csv_records(text.splitlines(keepends=True), path):
        if header is None:
            header = [c.strip().lower() for c in cells]
            if not any(k in header for k in TEXT_FIELDS):
                raise DataFormatError(
                    f"no text column (expected one of {', '.join(TEXT_FIELDS)}; found "
                    f"{', '.join(header)})", path=path, line=line)
            continue
        if len(cells) != len(header):
            raise DataFormatError(f"expected {len(header)} columns, got {len(cells)}", path=path, line=line)
        doc = record_document(dict(zip(header, cells)), path, rel, line, "csv")
        if doc is not None:
            docs.append(doc)
    return docs


def read_beir(path: Path, rel: str, empty: list[str] | None = None) -> list[Document]:
    """A BEIR ``corpus.jsonl`` at ``path`` (``rel`` its name in sources): one Document per line,
    ``doc_id`` = its ``_id``, kind ``beir``, title stripped and text normalised (``normalise_text``).

    The lines are read by ``embtune.data.beir.iter_corpus``, the one reader of BEIR corpora (its
    DataFormatError names the file and line for bad UTF-8 or JSON, a missing id or text, a duplicate
    id). A line whose text is blank gives no Document, and its ``_id`` is appended to ``empty`` when given.
    """
    docs = []
    for number, doc_id, title, text in iter_corpus(path):
        if not text.strip():
            if empty is not None:
                empty.append(doc_id)
            continue
        docs.append(Document(doc_id=doc_id, text=normalise_text(text), title=title.strip(),
                             source=f"{rel}:{number}", kind="beir"))
    return docs
