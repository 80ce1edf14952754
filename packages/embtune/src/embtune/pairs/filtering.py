"""Keep the pairs the base model agrees with; drop duplicate queries.

For each pair, in this order (a pair is counted under the first reason that drops it):

1. ``empty_query``: the query is blank.
2. ``not_top_k`` (round-trip consistency, as in Promptagator / Qwen3-Embedding): under the base
   model the positive must rank in the top ``top_k`` of all chunks for its query, or its cosine must
   reach ``min_cosine``. With ``top_k=None`` the cosine is the only test (Qwen3-Embedding kept
   synthetic pairs above 0.7); with both None nothing is tested. The rank is exact: 1 + the number
   of chunks scoring strictly higher than the positive.
3. ``duplicate_query``: the same normalised query (case, punctuation and spacing ignored) was already
   kept for the same positive chunk.
4. ``near_duplicate_query``: cosine above ``dedup_cosine`` with a query already kept for the same
   positive chunk (``dedup_cosine=None`` turns this off).

Chunks are encoded once (or passed in as ``embeddings`` to share with ``mine_hard_negatives``);
queries are encoded once per distinct text. Scores are computed block by block, so memory stays
bounded for large corpora.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from embtune.corpus.types import Chunk
from embtune.errors import ConfigError
from embtune.models.inference import encode_texts
from embtune.pairs.embeddings import chunk_embeddings
from embtune.pairs.types import Pair

REASONS = ("empty_query", "not_top_k", "duplicate_query", "near_duplicate_query")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


@dataclass
class FilterStats:
    """Counts of one ``filter_pairs`` call: ``dropped`` per reason (every key of ``REASONS``)."""

    total: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    kept_by_builder: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all counts."""
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped),
                "kept_by_builder": dict(self.kept_by_builder)}


def normalise_query(text: str) -> str:
    """Query text for duplicate detection: casefolded, punctuation removed, spaces collapsed."""
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def positive_scores(model: Any, pairs: Sequence[Pair], q_emb: np.ndarray, q_row: list[int],
                    emb: np.ndarray, row_of: dict[str, int], batch_size: int = 64,
                    show_progress: bool = True) -> tuple[np.ndarray, list[int | None]]:
    """Cosine of each pair's query with its positive, and the positive's chunk row (None if not a chunk).

    Positives whose ``positive_id`` is a chunk use that chunk's embedding; others are encoded.
    """
    pos_row = [row_of.get(p.positive_id) for p in pairs]
    outside = [i for i, r in enumerate(pos_row) if r is None]
    scores = np.empty(len(pairs), dtype=np.float32)
    inside = [i for i, r in enumerate(pos_row) if r is not None]
    if inside:
        qs = q_emb[[q_row[i] for i in inside]]
        ps = emb[[pos_row[i] for i in inside]]
        scores[inside] = np.einsum("ij,ij->i", qs, ps)
    if outside:
        texts = list(dict.fromkeys(pairs[i].positive for i in outside))
        p_emb = encode_texts(model, texts, "document", batch_size=batch_size, show_progress=show_progress)
        where = {t: k for k, t in enumerate(texts)}
        for i in outside:
            scores[i] = float(q_emb[q_row[i]] @ p_emb[where[pairs[i].positive]])
    return scores, pos_row


def count_higher(q_emb: np.ndarray, thresholds: np.ndarray, emb: np.ndarray, exclude_rows: list[int | None],
                 show_progress: bool = True) -> np.ndarray:
    """For each query row, how many chunk rows score strictly above its threshold (its own positive row,
    when given in ``exclude_rows``, is not counted). Computed in blocks of queries."""
    n_chunks = max(1, emb.shape[0])
    block = max(1, min(1024, (1 << 24) // n_chunks))
    out = np.zeros(len(q_emb), dtype=np.int64)
    starts = range(0, len(q_emb), block)
    bar_off = not show_progress or len(starts) < 2
    for start in tqdm(starts, desc="Ranking positives", unit="block", disable=bar_off):
        scores = q_emb[start : start + block] @ emb.T
        higher = scores > thresholds[start : start + block, None]
        for k, row in enumerate(exclude_rows[start : start + block]):
            if row is not None:
                higher[k, row] = False
        out[start : start + block] = higher.sum(axis=1)
    return out


def filter_pairs(pairs: Sequence[Pair], model: Any, chunks: Sequence[Chunk], top_k: int | None = 20,
                 min_cosine: float | None = None, *, dedup_cosine: float | None = 0.95,
                 embeddings: Any = None, batch_size: int = 64,
                 show_progress: bool = True) -> tuple[list[Pair], FilterStats]:
    """Filter ``pairs`` with the base ``model`` (see the module docstring for the rules).

    In: pairs; the base SentenceTransformer; all chunks of the corpus; ``top_k`` the rank the
    positive must reach (None: no rank test); ``min_cosine`` a cosine that keeps a pair whatever its
    rank (None: rank only; with ``top_k=None`` the only test: pairs below it are dropped); ``dedup_cosine`` the near-duplicate threshold (None: off);
    ``embeddings`` optional chunk embeddings (one row per chunk). Out: ``(kept pairs in input order,
    FilterStats)``. Raises ConfigError for bad thresholds or embeddings of the wrong shape.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    for name, value in (("min_cosine", min_cosine), ("dedup_cosine", dedup_cosine)):
        if value is not None and not -1.0 <= float(value) <= 1.0:
            raise ConfigError(f"{name} must be between -1 and 1 (or None), got {value!r}")
    pairs = list(pairs)
    dropped = {reason: 0 for reason in REASONS}
    alive = [i for i, p in enumerate(pairs) if p.query.strip()]
    dropped["empty_query"] = len(pairs) - len(alive)
    if not alive:
        return [], FilterStats(total=len(pairs), kept=0, dropped=dropped)
    live = [pairs[i] for i in alive]
    texts = list(dict.fromkeys(p.query for p in live))
    text_row = {t: k for k, t in enumerate(texts)}
    q_emb = encode_texts(model, texts, "query", batch_size=batch_size, show_progress=show_progress)
    q_row = [text_row[p.query] for p in live]

    consistent = np.ones(len(live), dtype=bool)
    if top_k is not None or min_cosine is not None:
        emb = chunk_embeddings(model, chunks, embeddings, batch_size, show_progress)
        row_of = {c.id: r for r, c in enumerate(chunks)}
        scores, pos_rows = positive_scores(model, live, q_emb, q_row, emb, row_of, batch_size, show_progress)
        if top_k is not None:
            ranks = 1 + count_higher(q_emb[q_row], scores, emb, pos_rows, show_progress)
            consistent = ranks <= top_k
            if min_cosine is not None:
                consistent |= scores >= float(min_cosine)
        else:
            consistent = scores >= float(min_cosine)
    dropped["not_top_k"] = int((~consistent).sum())

    kept: list[Pair] = []
    seen_text: dict[str, set[str]] = defaultdict(set)
    seen_rows: dict[str, list[int]] = defaultdict(list)
    for k, pair in enumerate(live):
        if not consistent[k]:
            continue
        norm = normalise_query(pair.query)
        if norm in seen_text[pair.positive_id]:
            dropped["duplicate_query"] += 1
            continue
        row = q_row[k]
        earlier = seen_rows[pair.positive_id]
        if dedup_cosine is not None and earlier and float(np.max(q_emb[earlier] @ q_emb[row])) > dedup_cosine:
            dropped["near_duplicate_query"] += 1
            continue
        seen_text[pair.positive_id].add(norm)
        earlier.append(row)
        kept.append(pair)
    by_builder = Counter(p.builder for p in kept)
    return kept, FilterStats(total=len(pairs), kept=len(kept), dropped=dropped,
                             kept_by_builder=dict(sorted(by_builder.items())))
