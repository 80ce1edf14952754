"""LlamaIndex nodes ↔ embtune chunks, and training pairs from nodes with the from-corpus builders.

Each node is one chunk (node parsers have cut them already; the text is not re-chunked). Mapping:
chunk id = ``node.node_id``; source document = ``metadata[doc_id_key]`` when given, else
``node.ref_doc_id``, else the node itself; text = the node content without metadata; title =
``metadata["title"]`` or ``metadata["document_title"]`` (TitleExtractor); heading path = the
``header_path`` that ``MarkdownNodeParser`` writes (``"/Guide/"``: the headings *above* the node's
section) followed by the node's own heading (its first line, ``"## Install"``), so a section's path
is ``["Guide", "Install"]``, as the LangChain twin gives it.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

try:
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_llamaindex needs llama-index-core: pip install llama-index-core") from exc

from embtune.corpus.types import Chunk
from embtune.data.pairs import pairs_to_training_data
from embtune.interop import build_pairs, check_unique_ids, make_chunk


OWN_HEADING = re.compile(r"^(#+)\s(.*)")
"""A markdown heading line, as ``MarkdownNodeParser`` matches it."""


def heading_path(metadata: Mapping[str, Any], text: str) -> list[str]:
    """The node's full heading path: the ``header_path`` metadata (parents only, ``"/Guide/"``) and,
    when it has one, the node's own heading (the first line of a ``MarkdownNodeParser`` section).
    In: the node's metadata and text; out: the headings, outermost first (``[]`` when none)."""
    path = [h for h in str(metadata.get("header_path") or "").split("/") if h.strip()]
    if "header_path" in metadata:
        own = OWN_HEADING.match(text.lstrip("\n").split("\n", 1)[0])
        if own and own.group(2).strip():
            path.append(own.group(2).strip())
    return path


def nodes_to_chunks(nodes: Iterable[BaseNode], *, doc_id_key: str | None = None) -> list[Chunk]:
    """One ``embtune.corpus.Chunk`` per node (``NodeWithScore`` unwrapped), in order. ValueError
    for a repeated node id, TypeError for an item that is not a node."""
    chunks = []
    for node in nodes:
        if isinstance(node, NodeWithScore):
            node = node.node
        if not isinstance(node, BaseNode):
            raise TypeError(f"expected a LlamaIndex node, got {type(node).__name__}")
        meta = dict(node.metadata or {})
        doc_id = meta.get(doc_id_key) if doc_id_key else None
        doc_id = doc_id or node.ref_doc_id
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        headings = heading_path(meta, text)
        chunks.append(make_chunk(text, id=node.node_id,
                                 doc_id=doc_id, title=meta.get("title") or meta.get("document_title") or "",
                                 headings=headings,
                                 source=str(meta.get("file_path") or meta.get("file_name") or "")))
    check_unique_ids(chunks)
    return chunks


def pairs_from_nodes(nodes: Iterable[BaseNode], builder: Any = None, *,
                     doc_id_key: str | None = None) -> list[Any]:
    """Training pairs (``embtune.pairs.Pair``) of ``nodes`` built by ``builder`` (anything with
    ``.build(chunks)``); None uses ``HeuristicPairs`` (title and heading pairs, no labels or
    LLM). ``Pair.positive_id`` is the node id."""
    return build_pairs(nodes_to_chunks(nodes, doc_id_key=doc_id_key), builder)


def training_data(pairs: Iterable[Any]) -> Any:
    """``embtune.data.PairsData`` (anchor, positive[, negative_i]) of ``pairs`` for ``embtune.train``."""
    return pairs_to_training_data(list(pairs))


def corpus_to_nodes(corpus: Mapping[str, str], titles: Mapping[str, str] | None = None) -> list[TextNode]:
    """One ``TextNode`` per document of ``corpus`` (doc id → text) with ``id_`` = the doc id, so a
    retriever's node ids are the qrels' doc ids; ``titles`` go to ``metadata["title"]`` (excluded
    from the embedded text, which is already title + body for BEIR corpora)."""
    nodes = []
    for doc_id, text in corpus.items():
        meta = {"title": titles[doc_id]} if titles and titles.get(doc_id) else {}
        nodes.append(TextNode(id_=str(doc_id), text=text, metadata=meta,
                              excluded_embed_metadata_keys=list(meta), excluded_llm_metadata_keys=[]))
    return nodes
