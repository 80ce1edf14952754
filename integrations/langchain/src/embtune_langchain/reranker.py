"""`EmbtuneReranker`: an embtune reranker (a sentence-transformers ``CrossEncoder``) as a LangChain
document compressor.

Use it as the ``base_compressor`` of LangChain's ``ContextualCompressionRetriever`` (package
``langchain-classic``; ``langchain.retrievers`` in LangChain 0.x) to rerank what a first-stage
retriever returns. Like LangChain's ``CrossEncoderReranker`` it keeps the ``top_n`` best documents,
best first; like its Cohere reranker it returns copies of the documents with the score in
``metadata["relevance_score"]`` (the originals are not modified). The score is the reranker's raw
logit (`embtune.rerankers.score_pairs`; ``sigmoid(score)`` is a probability for rerankers trained
with BCE), ties keep the retriever's order, and the document text scored is ``page_content``.
"""
from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any, Optional

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_langchain needs langchain-core: pip install langchain-core") from exc
from pydantic import ConfigDict, Field, PrivateAttr

from embtune.rerankers import as_reranker, rerank

RELEVANCE_KEY = "relevance_score"


class EmbtuneReranker(BaseDocumentCompressor):
    """LangChain document compressor that reranks documents with a fine-tuned embtune reranker.

    Setup:
        ``pip install embtune-langchain`` (and ``langchain-classic`` for ContextualCompressionRetriever)

    Key init args:
        model: a reranker folder (what ``embtune.rerankers.save_reranker`` writes, or any Hugging
            Face ``*ForSequenceClassification`` / sentence-transformers CrossEncoder folder), a hub
            id, or an in-memory ``CrossEncoder`` (e.g. from ``embtune.rerankers.load_reranker``).
        top_n: how many documents to keep (None: all of them, reordered).
        batch_size: (query, document) pairs per forward pass.
        device / max_length: where and with what token limit a folder is loaded (ignored for an
            in-memory model).

    Instantiate:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever
            from embtune_langchain import EmbtuneReranker

            reranker = EmbtuneReranker(model="runs/demo/reranker", top_n=3)
            retriever = ContextualCompressionRetriever(base_compressor=reranker,
                                                       base_retriever=store.as_retriever(k=20))
            docs = retriever.invoke("what does X do?")   # 3 Documents, best first

    Compress:
        ``reranker.compress_documents(docs, query)`` → the ``top_n`` best documents (copies), best
        first, each with ``metadata["relevance_score"]``; ``await reranker.acompress_documents(...)``
        runs it in the default executor.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: Any = Field(description="Reranker folder, hub id or sentence-transformers CrossEncoder.")
    top_n: Optional[int] = Field(default=3, gt=0, description="Documents to keep (None: all, reordered).")
    batch_size: int = Field(default=32, gt=0, description="(query, document) pairs per forward pass.")
    device: Optional[str] = Field(default=None,
                                  description="cpu, cuda, ... for a folder (default: CUDA when available).")
    max_length: Optional[int] = Field(default=None, ge=8,
                                      description="Token limit of a (query, document) pair.")

    _client: Any = PrivateAttr()

    def model_post_init(self, __context: Any) -> None:
        """Load the reranker once: a folder or hub id with `embtune.rerankers.load_reranker`
        (inference mode); an in-memory CrossEncoder is used as it is. TypeError for anything else."""
        self._client = as_reranker(self.model, device=self.device, max_length=self.max_length)

    @property
    def client(self) -> Any:
        """The loaded sentence-transformers CrossEncoder."""
        return self._client

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Optional[Callbacks] = None) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``.

        In: the retrieved Documents, the query (``callbacks`` are accepted and unused, like LangChain's
        CrossEncoderReranker). Out: copies of the ``top_n`` best Documents, best first, each with its
        score (the raw logit) in ``metadata["relevance_score"]``; [] for no documents.
        """
        if not documents:
            return []
        ranked = rerank(self._client, query, [doc.page_content for doc in documents], top_k=self.top_n,
                        batch_size=self.batch_size)
        return [_with_score(documents[i], score) for i, score in ranked]


def _with_score(doc: Document, score: float) -> Document:
    """A copy of ``doc`` (its own type, id kept) whose metadata adds ``relevance_score``."""
    metadata = deepcopy(doc.metadata)
    metadata[RELEVANCE_KEY] = score
    return doc.model_copy(update={"metadata": metadata})
