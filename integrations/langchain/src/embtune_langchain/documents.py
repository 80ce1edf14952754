"""LangChain ``Document``s → embtune chunks → training pairs, with the from-corpus pair builders.

Each Document is taken as one chunk (LangChain text splitters have usually cut them already; the
page content is used as is, not re-chunked). Mapping:

* chunk id: ``Document.id``, else ``metadata[id_key]``, else the chunker's stable hash;
* source document: ``metadata[doc_id_key]`` (default ``"source"``, what LangChain loaders set),
  else the chunk itself;
* title: ``metadata["title"]``; heading path: the ``"Header 1"``, ``"Header 2"``... values that
  ``MarkdownHeaderTextSplitter`` writes, in level order.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

try:
    from langchain_core.documents import Document
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_langchain needs langchain-core: pip install langchain-core") from exc

from embtune.corpus.types import Chunk
from embtune.data.pairs import pairs_to_training_data
from embtune.interop import build_pairs, check_unique_ids, make_chunk

_HEADER = re.compile(r"header\s*(\d+)", re.IGNORECASE)


def _headings(metadata: dict[str, Any]) -> list[str]:
    levels = [(int(m.group(1)), str(v)) for k, v in metadata.items() if (m := _HEADER.fullmatch(str(k)))]
    return [value for _, value in sorted(levels)]


def documents_to_chunks(documents: Iterable[Document], *, id_key: str | None = None,
                        doc_id_key: str = "source", title_key: str = "title") -> list[Chunk]:
    """One ``embtune.corpus.Chunk`` per Document, in order (see the module docstring for the field
    mapping). ValueError when two Documents end up with the same chunk id; TypeError for an item
    that is not a Document."""
    chunks = []
    for doc in documents:
        if not isinstance(doc, Document):
            raise TypeError(f"expected langchain_core.documents.Document, got {type(doc).__name__}")
        meta = dict(doc.metadata or {})
        cid = doc.id or (meta.get(id_key) if id_key else None)
        chunks.append(make_chunk(doc.page_content, id=cid, doc_id=meta.get(doc_id_key),
                                 title=meta.get(title_key) or "", headings=_headings(meta),
                                 source=str(meta.get("source") or "")))
    check_unique_ids(chunks)
    return chunks


def pairs_from_documents(documents: Iterable[Document], builder: Any = None, *, id_key: str | None = None,
                         doc_id_key: str = "source") -> list[Any]:
    """Training pairs (``embtune.pairs.Pair``) built from ``documents`` by ``builder`` (anything with
    ``.build(chunks)``: ``HeuristicPairs``, ``LabelPairs``, ``LLMPairs``); None uses
    ``HeuristicPairs`` (title and heading pairs, no labels or LLM needed). ``Pair.positive_id``
    is the Document's chunk id, ``Pair.doc_id`` its source. Pass the result to
    ``embtune_langchain.training_data`` for ``embtune.train``."""
    return build_pairs(documents_to_chunks(documents, id_key=id_key, doc_id_key=doc_id_key), builder)


def training_data(pairs: Iterable[Any]) -> Any:
    """``embtune.data.PairsData`` (anchor, positive[, negative_i]) of ``pairs`` for ``embtune.train``."""
    return pairs_to_training_data(list(pairs))
