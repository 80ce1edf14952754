"""Hard negatives: chunks the base model ranks high for a query but that are not its answer.

FAISS (``IndexFlatIP``: exact inner product on L2-normalised float32 vectors, i.e. cosine) searches
the base model's chunk embeddings for every query. Walking a query's ranking from the top, the
positive itself is passed over, then:

* the first ``skip_top`` other chunks are skipped (the closest ones are the likeliest unlabelled
  answers);
* a chunk scoring above ``positive score - margin`` is skipped (false-negative guard, as in
  NV-Retriever's "TopK-MarginPos");
* a chunk of the positive's own document is skipped (it may well answer the query too), as is any
  chunk of a document in ``exclude_doc_ids`` (e.g. held-out evaluation documents) and any chunk
  whose text equals the positive's;
* the next ``n`` chunks left are the negatives, hardest first.

A pair that already carries negatives (from a triplets file) keeps them and is topped up to ``n``.
When fewer than ``n`` chunks survive the guards (a tiny corpus), the pair gets fewer: callers that
need a fixed count should drop pairs with ``len(pair.negatives) < n``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Collection, Sequence

import numpy as np
from tqdm.auto import tqdm

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError, EmbtuneError
from embtune.models.inference import encode_texts
from embtune.pairs.embeddings import chunk_embeddings
from embtune.pairs.filtering import positive_scores
from embtune.pairs.types import Pair


def _faiss():
    try:
        import faiss
    except ImportError:
        raise EmbtuneError("hard-negative mining needs FAISS: pip install 'embtune[faiss]'") from None
    return faiss


def _check(n: int, skip_top: int, margin: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n (negatives per pair) must be a positive integer, got {n!r}")
    if isinstance(skip_top, bool) or not isinstance(skip_top, int) or skip_top < 0:
        raise ConfigError(f"skip_top must be an integer >= 0, got {skip_top!r}")
    if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not -1.0 <= margin <= 2.0:
        raise ConfigError(f"margin must be a number between -1 and 2, got {margin!r}")


def mine_hard_negatives(pairs: Sequence[Pair], model: Any, chunks: Sequence[Chunk], n: int = 4,
                        skip_top: int = 3, margin: float = 0.05, embeddings: Any = None, *,
                        exclude_doc_ids: Collection[str] = (), batch_size: int = 64,
                        show_progress: bool = True) -> list[Pair]:
    """Add up to ``n`` hard negatives to every pair (see the module docstring for the guards).

    In: pairs; the base SentenceTransformer; all chunks; ``n`` negatives per pair; ``skip_top``
    top-ranked non-positive chunks never used; ``margin`` the false-negative guard; ``embeddings``
    optional chunk embeddings (one row per chunk, shared with ``filter_pairs``);
    ``exclude_doc_ids`` documents whose chunks may not be negatives. Out: new Pairs, same order,
    with ``negatives`` (chunk texts) and ``negative_ids`` (chunk ids). Raises EmbtuneError when
    faiss is not installed, ConfigError for bad settings.
    """
    faiss = _faiss()
    _check(n, skip_top, margin)
    pairs = list(pairs)
    if not pairs:
        return []
    if not chunks:
        raise ConfigError("mine_hard_negatives needs the corpus chunks (got none)")
    emb = chunk_embeddings(model, chunks, embeddings, batch_size, show_progress)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    texts = list(dict.fromkeys(p.query for p in pairs))
    text_row = {t: k for k, t in enumerate(texts)}
    q_emb = encode_texts(model, texts, "query", batch_size=batch_size, show_progress=show_progress)
    q_row = [text_row[p.query] for p in pairs]
    row_of = {c.id: r for r, c in enumerate(chunks)}
    pos_score, pos_row = positive_scores(model, pairs, q_emb, q_row, emb, row_of, batch_size, show_progress)
    excluded = set(exclude_doc_ids)
    chunk_doc = [c.doc_id for c in chunks]
    blocked_doc = np.array([d in excluded for d in chunk_doc], dtype=bool)

    found: list[list[int]] = [[] for _ in pairs]
    wanted = [max(0, n - len(p.negatives)) for p in pairs]
    todo = [i for i in range(len(pairs)) if wanted[i]]
    k = min(len(chunks), skip_top + 1 + 4 * n + 16)
    bar = tqdm(total=len(todo), desc="Mining negatives", unit="pair", disable=not show_progress)
    while todo:
        query_rows = sorted({q_row[i] for i in todo})
        scores, ids = index.search(q_emb[query_rows], k)
        result = {r: (scores[j], ids[j]) for j, r in enumerate(query_rows)}
        unfinished = []
        for i in todo:
            row_scores, row_ids = result[q_row[i]]
            chosen = _select(pairs[i], row_scores, row_ids, pos_row[i], float(pos_score[i]), wanted[i],
                             skip_top, margin, chunks, chunk_doc, blocked_doc)
            if len(chosen) < wanted[i] and k < len(chunks):
                unfinished.append(i)
            else:
                found[i] = chosen
                bar.update(1)
        todo = unfinished
        k = min(len(chunks), 2 * k)
    bar.close()
    out = []
    for pair, rows in zip(pairs, found):
        out.append(dataclasses.replace(pair, negatives=[*pair.negatives, *(chunks[r].text for r in rows)],
                                       negative_ids=[*pair.negative_ids, *(chunks[r].id for r in rows)]))
    return out


def _select(pair: Pair, scores: np.ndarray, ids: np.ndarray, pos_row: int | None, pos_score: float,
            wanted: int, skip_top: int, margin: float, chunks: Sequence[Chunk], chunk_doc: list[str],
            blocked_doc: np.ndarray) -> list[int]:
    """Walk one query's ranking and return up to ``wanted`` negative chunk rows."""
    chosen: list[int] = []
    skipped = 0
    have = set(pair.negative_ids)
    limit = pos_score - margin
    positive = pair.positive.strip()
    for score, row in zip(scores.tolist(), ids.tolist()):
        if row < 0 or row == pos_row:
            continue
        if skipped < skip_top:
            skipped += 1
            continue
        if score > limit or chunk_doc[row] == pair.doc_id or blocked_doc[row]:
            continue
        chunk = chunks[row]
        if chunk.id in have or chunk.text.strip() == positive:
            continue
        chosen.append(row)
        if len(chosen) == wanted:
            break
    return chosen
