"""`EmbtuneEmbeddings`: an embtune (or any sentence-transformers) model as LangChain ``Embeddings``.

Unlike ``HuggingFaceEmbeddings``, queries go through ``encode_query`` and documents through
``encode_document``, so the query/document prompts saved with a fine-tuned model are applied
without extra kwargs (e5's ``"query: "``, a Qwen3-Embedding instruction...); ``query_prompt`` /
``document_prompt`` replace them and ``instruction`` sets the query prompt
``"Instruct: {instruction}\\nQuery: "`` (``embtune.models.architectures.instruction_prompt``). Texts
are not rewritten (no newline replacement); no process pool is started.
"""
from __future__ import annotations

import os
from typing import Any, Optional

try:
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("embtune_langchain needs langchain-core: pip install langchain-core") from exc
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from sentence_transformers import SentenceTransformer

from embtune.models.architectures import instruction_prompt
from embtune.models.inference import encode_texts, load_inference_model, model_reference


class EmbtuneEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings backed by a fine-tuned embtune model.

    Setup:
        ``pip install embtune-langchain``

    Key init args:
        model: folder (merged model, LoRA adapter folder, plain HF model), hub id, an in-memory
            ``SentenceTransformer`` / ``FastSentenceTransformer``, or None for the embedded
            all-MiniLM-L6-v2.
        batch_size: texts per forward pass.
        normalize: L2-normalise the vectors (cosine = dot product).
        query_prompt / document_prompt: replace the model's saved prompts ("" for none); by
            default the model's own apply (e5: ``"query: "`` / ``"passage: "``).
        instruction: a task description; queries then get ``"Instruct: {instruction}\\nQuery: "``
            (Qwen3-Embedding style). Excludes ``query_prompt``.
        truncate_dim: keep the first dims of each vector (Matryoshka), re-normalised.

    Instantiate:
        .. code-block:: python

            from embtune_langchain import EmbtuneEmbeddings
            emb = EmbtuneEmbeddings(model="runs/demo/lora/merged")

    Embed single text:
        ``emb.embed_query("what does X do?")`` → list of floats (query prompt applied)

    Embed multiple text:
        ``emb.embed_documents(["doc one", "doc two"])`` → one list of floats per text

    Async:
        ``await emb.aembed_query(...)`` / ``await emb.aembed_documents([...])`` run the sync
        methods in the default executor (thread pool).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: Any = Field(default=None,
                       description="Folder, hub id, SentenceTransformer, or None (embedded MiniLM).")
    batch_size: int = Field(default=32, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalise the embeddings.")
    query_prompt: Optional[str] = Field(default=None,
                                        description="Replaces the model's query prompt ('' for none).")
    document_prompt: Optional[str] = Field(default=None,
                                           description="Replaces the model's document prompt ('' for none).")
    instruction: Optional[str] = Field(default=None, min_length=1,
                                       description="Task: queries get 'Instruct: {task}\\nQuery: '.")
    truncate_dim: Optional[int] = Field(default=None, gt=0, description="Matryoshka: keep the first dims.")
    device: Optional[str] = Field(default=None, description="cpu, cuda, ... (default: CUDA when available).")
    max_seq_length: Optional[int] = Field(default=None, gt=0,
                                          description="Truncate texts to this many tokens.")
    show_progress: bool = Field(default=False, description="Show a progress bar while encoding.")

    _client: SentenceTransformer = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _one_query_prompt(cls, data: Any) -> Any:
        """Refuse ``query_prompt`` together with ``instruction`` (both set the query prompt), before
        the model is loaded."""
        if isinstance(data, dict) and None not in (data.get("query_prompt"), data.get("instruction")):
            raise ValueError("give query_prompt or instruction, not both")
        return data

    def model_post_init(self, __context: Any) -> None:
        """Load the model once (names and folders via ``FastSentenceTransformer.from_pretrained``)."""
        if not isinstance(self.model, (str, os.PathLike, SentenceTransformer, type(None))):
            raise TypeError("model must be a folder, a hub id or a SentenceTransformer, "
                            f"got {type(self.model).__name__}")
        self._client = load_inference_model(self.model, device=self.device,
                                            max_seq_length=self.max_seq_length)

    @property
    def client(self) -> SentenceTransformer:
        """The loaded SentenceTransformer."""
        return self._client

    @property
    def model_name(self) -> Optional[str]:
        """Folder or hub id of the model (None for an in-memory model)."""
        return model_reference(self.model)

    @property
    def effective_query_prompt(self) -> Optional[str]:
        """The prompt that replaces the model's query prompt: from ``instruction`` or ``query_prompt``;
        None keeps the model's own."""
        return instruction_prompt(self.instruction) if self.instruction is not None else self.query_prompt

    def _embed(self, texts: list[str], kind: str) -> list[list[float]]:
        prompt = self.effective_query_prompt if kind == "query" else self.document_prompt
        emb = encode_texts(self._client, texts, kind, batch_size=self.batch_size, normalize=self.normalize,
                           prompt=prompt, truncate_dim=self.truncate_dim, show_progress=self.show_progress)
        return emb.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One embedding (list of floats) per text, document prompt applied; [] for no texts."""
        if not texts:
            return []
        return self._embed(list(texts), "document")

    def embed_query(self, text: str) -> list[float]:
        """The embedding of one query (list of floats), query prompt applied."""
        return self._embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` run in the default executor (LangChain's ``run_in_executor``)."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` run in the default executor (LangChain's ``run_in_executor``)."""
        return await run_in_executor(None, self.embed_query, text)
