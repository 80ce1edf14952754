"""The two records of the from-corpus stages: a ``Document`` (one ingested text) and a ``Chunk`` of it.

Both are plain dataclasses with ``to_dict`` / ``from_dict`` matching the JSONL layouts of
``INTERFACE.md`` (``chunks.jsonl`` holds one ``Chunk.to_dict()`` per line).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DOCUMENT_KINDS = ("text", "markdown", "rst", "html", "pdf", "jsonl", "json", "csv", "beir")
"""``Document.kind`` values. ``markdown`` and ``html`` texts carry Markdown ``#`` heading lines (HTML
headings are converted to them at ingestion), ``rst`` texts reStructuredText underlined titles; the
chunker reads headings only from these three kinds."""


@dataclass
class Document:
    """One ingested document.

    ``doc_id``: unique id (a file's path relative to the ingested folder, a record's ``id``/``_id``,
    or ``<file>#<line>`` for records without one). ``text``: its UTF-8 text (headings kept as Markdown
    ``#`` lines for Markdown/HTML, as underlined titles for reStructuredText). ``title``: explicit
    title ("" when there is none). ``source``: where it came from (relative file path, ``:line`` for
    records). ``kind``: one of ``DOCUMENT_KINDS``.
    """

    doc_id: str
    text: str
    title: str = ""
    source: str = ""
    kind: str = "text"

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Document":
        """Inverse of ``to_dict``."""
        return cls(doc_id=str(obj["doc_id"]), text=obj["text"], title=obj.get("title", ""),
                   source=obj.get("source", ""), kind=obj.get("kind", "text"))


@dataclass
class Chunk:
    """A piece of one document that fits the model's token window.

    ``id``: stable hash of ``doc_id`` and ``text`` (a rerun gives the same ids). ``text``: the body
    text (heading lines are not part of it; they are in ``headings``). ``title``: the document's
    title. ``headings``: heading path from the top-level heading down to this chunk's section.
    ``source``: the document's source.
    """

    id: str
    doc_id: str
    text: str
    title: str = ""
    headings: list[str] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "doc_id", "text", "title", "headings", "source"}`` (the chunks.jsonl line)."""
        return {"id": self.id, "doc_id": self.doc_id, "text": self.text, "title": self.title,
                "headings": list(self.headings), "source": self.source}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Chunk":
        """Inverse of ``to_dict``."""
        return cls(id=str(obj["id"]), doc_id=str(obj["doc_id"]), text=obj["text"], title=obj.get("title", ""),
                   headings=list(obj.get("headings", [])), source=obj.get("source", ""))
