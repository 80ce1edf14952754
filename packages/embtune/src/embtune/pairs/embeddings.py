"""Base-model embeddings shared by the pair stages (label positives, filtering, mining).

Chunks are encoded once with ``model.encode_document`` and queries with ``model.encode_query`` (so
the model's prompts apply; ``embtune.models.inference.encode_texts`` does it), L2-normalised float32
NumPy arrays; pass the chunk matrix to
``filter_pairs`` and ``mine_hard_negatives`` through their ``embeddings`` argument to reuse it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError
from embtune.models.inference import encode_texts, truncate_normalize

BATCH_SIZE = 64
"""Texts per encoding batch in the pair stages."""


def encode_chunks(model: Any, chunks: Sequence[Chunk], batch_size: int = BATCH_SIZE,
                  show_progress: bool = True) -> np.ndarray:
    """Document embeddings of ``chunks`` (their ``text``), in order: float32 [len(chunks), dim], norm 1."""
    return encode_texts(model, [c.text for c in chunks], "document", batch_size=batch_size,
                        show_progress=show_progress)


def encode_chunk_texts(model: Any, texts: Sequence[str], lengths: Any = None,
                       show_progress: bool = True) -> np.ndarray:
    """Document embeddings of chunk texts (a list, or ``pipeline.records.ChunkTexts`` reading them from
    chunks.jsonl), batch by batch: float32 [n, dim], rows of norm 1. ``lengths``: the texts' sort keys
    when known (``ChunkTexts.lengths``)."""
    return encode_texts(model, texts, "document", batch_size=BATCH_SIZE, show_progress=show_progress,
                        lengths=lengths)


def chunk_embeddings(model: Any, chunks: Sequence[Chunk], embeddings: Any = None, batch_size: int = BATCH_SIZE,
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
    return truncate_normalize(emb)
