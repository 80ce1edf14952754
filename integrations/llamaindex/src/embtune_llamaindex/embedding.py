"""`EmbtuneEmbedding`: an embtune (or any sentence-transformers) model as a LlamaIndex ``BaseEmbedding``.

Queries go through ``encode_query`` and texts through ``encode_document``, so the prompts saved
with a fine-tuned model apply (e5's ``"query: "``, a Qwen3-Embedding instruction...;
``HuggingFaceEmbedding`` injects its own ``"query"``/``"text"`` prompts and can replace them with
empty ones); ``query_prompt``/``document_prompt`` override them explicitly and ``instruction`` sets
the query prompt ``"Instruct: {instruction}\\nQuery: "``
(``embtune.models.architectures.instruction_prompt``). Batches are real batches of
``embed_batch_size``; async methods run the sync ones in a thread; local inference is not wrapped
in retries (a failure surfaces at once). LlamaIndex embeds
``node.get_content(metadata_mode=MetadataMode.EMBED)``, i.e. node metadata is part of the text unless
listed in ``excluded_embed_metadata_keys``.
"""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_llamaindex needs llama-index-core: pip install llama-index-core") from exc

from embtune.models.architectures import instruction_prompt
from embtune.models.inference import ModelLike, encode_texts, load_inference_model, model_reference

DEFAULT_BATCH_SIZE = 32


class EmbtuneEmbedding(BaseEmbedding):
    """LlamaIndex embedding model backed by a fine-tuned embtune model.

    ``EmbtuneEmbedding(model="runs/demo/lora/merged")``; ``model`` may be a folder (merged model,
    LoRA adapter folder, plain HF model), a hub id, an in-memory ``SentenceTransformer`` /
    ``FastSentenceTransformer``, or None for the embedded all-MiniLM-L6-v2. Use it with
    ``Settings.embed_model = EmbtuneEmbedding(...)`` or ``VectorStoreIndex(nodes, embed_model=...)``.
    ``EmbtuneEmbedding("Qwen/Qwen3-Embedding-0.6B", instruction="Given a claim, find evidence")``
    puts ``"Instruct: Given a claim, find evidence\\nQuery: "`` before queries.
    """

    query_prompt: Optional[str] = Field(default=None,
                                        description="Replaces the model's query prompt ('' for none).")
    document_prompt: Optional[str] = Field(default=None,
                                           description="Replaces the model's document prompt ('' for none).")
    instruction: Optional[str] = Field(default=None, min_length=1,
                                       description="Task: queries get 'Instruct: {task}\\nQuery: '.")
    normalize: bool = Field(default=True, description="L2-normalise the embeddings.")
    truncate_dim: Optional[int] = Field(default=None, gt=0,
                                        description="Matryoshka: keep the first dims, re-normalised.")

    _model: Any = PrivateAttr()

    def __init__(self, model: ModelLike = None, *, embed_batch_size: int = DEFAULT_BATCH_SIZE,
                 query_prompt: Optional[str] = None, document_prompt: Optional[str] = None,
                 instruction: Optional[str] = None, normalize: bool = True,
                 truncate_dim: Optional[int] = None, device: Optional[str] = None,
                 max_seq_length: Optional[int] = None, **kwargs: Any) -> None:
        """Load ``model`` once (names and folders via ``FastSentenceTransformer.from_pretrained`` on
        ``device``); other keyword arguments are BaseEmbedding's (``callback_manager``,
        ``num_workers``...). ``query_prompt`` / ``document_prompt`` replace the model's prompts ("" for
        none); ``instruction`` (a task description, not with ``query_prompt``) makes the query prompt
        ``"Instruct: {instruction}\\nQuery: "``. ValueError for both."""
        if query_prompt is not None and instruction is not None:
            raise ValueError("give query_prompt or instruction, not both")
        st = load_inference_model(model, device=device, max_seq_length=max_seq_length)
        kwargs.setdefault("model_name", model_reference(model) or type(st).__name__)
        super().__init__(embed_batch_size=embed_batch_size, query_prompt=query_prompt,
                         document_prompt=document_prompt, instruction=instruction, normalize=normalize,
                         truncate_dim=truncate_dim, **kwargs)
        self._model = st

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex records for this component."""
        return "EmbtuneEmbedding"

    @property
    def client(self) -> Any:
        """The loaded SentenceTransformer."""
        return self._model

    @property
    def effective_query_prompt(self) -> Optional[str]:
        """The prompt that replaces the model's query prompt: from ``instruction`` or ``query_prompt``;
        None keeps the model's own."""
        return instruction_prompt(self.instruction) if self.instruction is not None else self.query_prompt

    def _encode(self, texts: List[str], kind: str) -> List[Embedding]:
        prompt = self.effective_query_prompt if kind == "query" else self.document_prompt
        return encode_texts(self._model, texts, kind, batch_size=self.embed_batch_size,
                            normalize=self.normalize, prompt=prompt, truncate_dim=self.truncate_dim).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        """Embedding of one query (query prompt applied)."""
        return self._encode([query], "query")[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        """Embedding of one text/node content (document prompt applied)."""
        return self._encode([text], "document")[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        """Embeddings of ``texts`` in one ``encode_document`` call (batches of ``embed_batch_size``)."""
        return self._encode(list(texts), "document") if texts else []

    async def _aget_query_embedding(self, query: str) -> Embedding:
        """``_get_query_embedding`` in a worker thread."""
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        """``_get_text_embedding`` in a worker thread."""
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: List[str]) -> List[Embedding]:
        """``_get_text_embeddings`` in a worker thread."""
        return await asyncio.to_thread(self._get_text_embeddings, texts)
