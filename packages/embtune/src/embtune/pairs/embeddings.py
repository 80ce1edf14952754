"""Base-model embeddings shared by the pair stages (label positives, filtering, mining).

Chunks are encoded once with ``model.encode_document`` and queries with ``model.encode_query`` (so
the model's prompts apply), L2-normalised float32 NumPy arrays; pass the chunk matrix to
``filter_pairs`` and ``mine_hard_negatives`` through their ``embeddings`` argument to reuse it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError


def encode_texts(model: Any, texts: Sequence[str], role: str, batch_size: int = 64,
                 show_progress: bool = True, lengths: Any = None) -> np.ndarray:
    """Encode ``texts`` as ``role`` ("query" or "document"); out: float32 [n, dim], rows of norm 1.

    The model's output is normalised here in float32 (not by the model, which may run in bf16).
    ``texts`` may be any int-indexable sequence (``embtune.pipeline.records.ChunkTexts`` reads them
    from disk); ``lengths`` optionally gives their sort keys (see ``embtune.models.inference.batch_order``).
    Encoded batch by batch into one preallocated matrix (``encode_batches``: the same batches and bits
    as one ``encode`` call), so memory is the result plus one batch.
    """
    from embtune.models.inference import encode_batches

    role = "query" if role == "query" else "document"
    if not len(texts):
        dim = model.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    out = None
    for idx, emb in encode_batches(model, texts, role, batch_size=batch_size, lengths=lengths,
                                   show_progress=show_progress, convert_to_tensor=True, normalize_embeddings=False):
        # normalise in float32 here: a bf16 model would normalise in bf16, leaving norms off by ~1e-3
        rows = _normalise(emb.float().cpu().numpy())
        if out is None:
            out = np.empty((len(texts), rows.shape[1]), dtype=np.float32)
        out[idx] = rows
    return out


def _normalise(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    return np.ascontiguousarray(emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12),
                                dtype=np.float32)


def encode_chunks(model: Any, chunks: Sequence[Chunk], batch_size: int = 64,
                  show_progress: bool = True) -> np.ndarray:
    """Document embeddings of ``chunks`` (their ``text``), in order: float32 [len(chunks), dim], norm 1."""
    return encode_texts(model, [c.text for c in chunks], "document", batch_size, show_progress)


def chunk_embeddings(model: Any, chunks: Sequence[Chunk], embeddings: Any = None, batch_size: int = 64,
                     show_progress: bool = True) -> np.ndarray:
    """``embeddings`` checked against ``chunks`` (one normalised row per chunk), or freshly encoded.

    Raises ConfigError when a given matrix has the wrong number of rows or is not 2-D.
    """
    if embeddings is None:
        return encode_chunks(model, chunks, batch_size, show_progress)
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().cpu().float().numpy()
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(chunks):
        raise ConfigError(f"embeddings must have one row per chunk ({len(chunks)}), got shape {emb.shape}")
    return _normalise(emb)
