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
from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
from sentence_transformers import SentenceTransformer

from embtune.models.names import default_model_path, resolve_model

ModelLike = Union[str, os.PathLike, SentenceTransformer, None]
KINDS = ("query", "document")


def load_inference_model(model: ModelLike = None, *, device: str | None = None,
                         max_seq_length: int | None = None,
                         trust_remote_code: bool = False, **options: Any) -> SentenceTransformer:
    """Return a SentenceTransformer ready to encode (eval mode, no gradients).

    ``model``: a folder (ST, plain HF or LoRA adapter folder), a hub id, ``None`` (or ``"default"``)
    for the embedded all-MiniLM-L6-v2, or an in-memory ``SentenceTransformer`` (returned as is;
    ``max_seq_length`` is then applied to it). Folders and names load with
    ``FastSentenceTransformer.from_pretrained(..., for_inference=True)`` on ``device`` (default:
    CUDA when available); ``options`` are its further keyword arguments (``dtype``, ``allow_pickle``,
    ``prompts``, ``instruction``, ...: ``pipeline.training.load_options``). TypeError for anything
    else; ModelLoadError / OSError from the loader.
    """
    if isinstance(model, SentenceTransformer):
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a folder, a hub id or a SentenceTransformer, "
                        f"got {type(model).__name__}")
    from embtune.models.fast_sentence_transformer import FastSentenceTransformer

    return FastSentenceTransformer.from_pretrained(resolve_model(model), max_seq_length=max_seq_length,
                                                   for_inference=True, device=device,
                                                   trust_remote_code=trust_remote_code, **options)


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


def batch_order(model: Any, texts: Sequence[Any], lengths: Any = None) -> np.ndarray:
    """The order in which sentence-transformers' ``encode`` embeds ``texts`` in one call: int64 indices.

    ``lengths`` (one int per text; default ``model._input_length`` of each text, which is ``len`` for a
    string, or ``len`` for a model without it) are the sort keys: longest first with ST's own
    ``np.argsort``, then interleaved long/short where the model flattens batches (ST's
    ``_interleave_sorted_indices``). ValueError when ``lengths`` does not have one entry per text.
    """
    n = len(texts)
    if lengths is None:
        length_of = getattr(model, "_input_length", len)
        lengths = [length_of(texts[i]) for i in range(n)]
    keys = np.asarray(lengths, dtype=np.int64)
    if keys.shape != (n,):
        raise ValueError(f"lengths must have one entry per text ({n}), got shape {keys.shape}")
    order = np.argsort(-keys)
    can_flatten = getattr(model, "_can_flatten_inputs", None)
    if callable(can_flatten) and can_flatten() and hasattr(model, "_interleave_sorted_indices"):
        order = model._interleave_sorted_indices(order)
    return order


def encode_batches(model: Any, texts: Sequence[str], kind: str, *, batch_size: int = 32, lengths: Any = None,
                   show_progress: bool = False, **encode_kwargs: Any) -> Iterator[tuple[np.ndarray, Any]]:
    """Embed ``texts`` as ``kind`` ("query"/"document") one batch at a time, in bounded memory.

    In: any sequence of strings indexable by int (a list, or one that reads them from disk such as
    ``embtune.pipeline.records.ChunkTexts``), optional ``lengths`` (see ``batch_order``), and
    ``encode_kwargs`` for ``model.encode_query`` / ``encode_document`` (e.g. ``convert_to_tensor``,
    ``normalize_embeddings``, ``prompt``). Yields ``(row indices, embeddings of those rows)`` per batch.
    The batches are exactly those one ``encode`` call over all the texts would form (``batch_order``),
    each encoded by its own call, so the rows equal that call's bit for bit while only one batch of
    texts, tokens and outputs exists at a time (ST's single call keeps every row as its own tensor
    until it stacks them, then copies).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    from tqdm.auto import tqdm

    encode = model.encode_query if kind == "query" else model.encode_document
    order = batch_order(model, texts, lengths)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="Batches", disable=not show_progress or len(starts) < 2):
        idx = order[start : start + batch_size]
        yield idx, encode([texts[int(i)] for i in idx], batch_size=batch_size, show_progress_bar=False,
                          **encode_kwargs)


def encode_texts(model: SentenceTransformer, texts: Sequence[str], kind: str, *, batch_size: int = 32,
                 normalize: bool = True, prompt: str | None = None, truncate_dim: int | None = None,
                 show_progress: bool = False, lengths: Any = None) -> np.ndarray:
    """Embed ``texts`` as ``kind`` ("query" or "document"); returns float32 [len(texts), dim].

    The one encoder of the package: the integrations, ``embtune eval``, the pair builders, filters and
    miners and the from-corpus stages all call it. Queries use ``model.encode_query`` and documents
    ``model.encode_document`` (the model's saved prompts apply); ``prompt`` replaces that prompt when
    given ("" means none). ``truncate_dim`` keeps the first dims (Matryoshka) before the optional L2
    normalisation, done here in float32 (a bf16 model's own normalisation leaves norms off by ~1e-3).
    ``texts`` may be any int-indexable sequence (``embtune.pipeline.records.ChunkTexts`` reads them from
    disk); ``lengths`` optionally gives their sort keys (``batch_order``). An empty ``texts`` gives an
    array of shape (0, dim). Batch by batch (``encode_batches``): memory is the result plus one batch.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not hasattr(texts, "__getitem__") or not hasattr(texts, "__len__"):
        texts = list(texts)
    if not len(texts):
        dim = truncate_dim or embedding_dim(model)
        return np.zeros((0, dim), dtype=np.float32)
    extra = {} if prompt is None else {"prompt": prompt}
    out = None
    for idx, emb in encode_batches(model, texts, kind, batch_size=batch_size, show_progress=show_progress,
                                   lengths=lengths, convert_to_numpy=True, normalize_embeddings=False, **extra):
        rows = truncate_normalize(emb, truncate_dim, normalize)
        if out is None:
            out = np.empty((len(texts), rows.shape[1]), dtype=np.float32)
        out[idx] = rows
    return out
