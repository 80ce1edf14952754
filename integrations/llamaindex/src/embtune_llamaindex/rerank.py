"""`EmbtuneRerank`: an embtune reranker (a sentence-transformers ``CrossEncoder``) as a LlamaIndex node
postprocessor.

A drop-in for LlamaIndex's ``SentenceTransformerRerank`` (same ``top_n`` default of 2, same
``keep_retrieval_score``, same text scored: ``node.get_content(metadata_mode=MetadataMode.EMBED)``,
same ``RERANKING`` callback event) that loads embtune rerankers (`embtune.rerankers.load_reranker`:
merged folders, Hugging Face ``*ForSequenceClassification`` folders, decoder rerankers with their
prompt) or takes an in-memory CrossEncoder. Differences: ``NodeWithScore.score`` is the reranker's
raw logit (`embtune.rerankers.score_pairs`) as a Python float; ties (and a score of 0) keep the
retriever's order; new ``NodeWithScore`` objects are returned (the input list is left as it is,
except the node metadata ``keep_retrieval_score`` writes, as in LlamaIndex).
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_llamaindex needs llama-index-core: pip install llama-index-core") from exc

from embtune.rerankers import as_reranker, rerank

DEFAULT_TOP_N = 2
DEFAULT_BATCH_SIZE = 32


class EmbtuneRerank(BaseNodePostprocessor):
    """LlamaIndex node postprocessor that reranks nodes with a fine-tuned embtune reranker.

    ``EmbtuneRerank(model="runs/demo/reranker", top_n=3)``; use it as
    ``index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])`` or call
    ``rerank.postprocess_nodes(nodes, query_str="...")``. ``model`` is a reranker folder or hub id
    (loaded with `embtune.rerankers.load_reranker` on ``device``, truncating pairs to ``max_length``
    tokens) or an in-memory ``CrossEncoder`` (then ``model`` records its type name).
    """

    model: str = Field(description="Reranker folder or hub id (the class name for an in-memory model).")
    top_n: Optional[int] = Field(default=DEFAULT_TOP_N, gt=0,
                                 description="Number of nodes to return sorted by score (None: all).")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0,
                            description="(query, node) pairs per forward pass.")
    keep_retrieval_score: bool = Field(default=False,
                                       description="Keep the retrieval score in node metadata "
                                                   "(retrieval_score).")

    _model: Any = PrivateAttr()

    def __init__(self, model: Any, top_n: Optional[int] = DEFAULT_TOP_N, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, keep_retrieval_score: bool = False,
                 device: Optional[str] = None,
                 max_length: Optional[int] = None, **kwargs: Any) -> None:
        """Load ``model`` once (a folder or hub id; an in-memory CrossEncoder is used as it is);
        other keyword arguments are BaseNodePostprocessor's (``callback_manager``). TypeError for a
        model of another type."""
        client = as_reranker(model, device=device, max_length=max_length)
        name = type(model).__name__ if client is model else os.fspath(model)
        super().__init__(model=name, top_n=top_n, batch_size=batch_size,
                         keep_retrieval_score=keep_retrieval_score, **kwargs)
        self._model = client

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex records for this component."""
        return "EmbtuneRerank"

    @property
    def client(self) -> Any:
        """The loaded sentence-transformers CrossEncoder."""
        return self._model

    def _postprocess_nodes(self, nodes: List[NodeWithScore],
                           query_bundle: Optional[QueryBundle] = None) -> List[NodeWithScore]:
        """Rerank ``nodes`` for ``query_bundle.query_str``.

        In: retrieved nodes and the query (ValueError without one). Out: new ``NodeWithScore`` for
        the ``top_n`` best nodes, best first, ``score`` = the reranker's raw logit; [] for no nodes.
        """
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
                     EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: self.top_n},
        ) as event:
            ranked = rerank(self._model, query_bundle.query_str, texts, top_k=self.top_n,
                            batch_size=self.batch_size)
            if self.keep_retrieval_score:
                for i, _ in ranked:
                    nodes[i].node.metadata["retrieval_score"] = nodes[i].score
            new_nodes = [NodeWithScore(node=nodes[i].node, score=score) for i, score in ranked]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        return new_nodes
