"""Exact (brute-force) top-k search in bounded memory, with torch.

The corpus is scored chunk by chunk (and queries block by block), and a running top-k per query is
merged after each chunk, so at most ``query_chunk_size x chunk_size`` scores exist at once: a
100k-document corpus never needs a full Q x N matrix. Ties are broken like sentence-transformers'
InformationRetrievalEvaluator: by ascending corpus id (string order), so results do not depend on
the chunk sizes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from embtune.errors import EmbtuneError

SCORE_FUNCTIONS = ("cos", "dot")


def _prepare(emb: torch.Tensor, score_function: str, what: str) -> torch.Tensor:
    if not torch.is_tensor(emb):
        emb = torch.as_tensor(emb)
    if emb.dim() != 2:
        raise ValueError(f"{what} embeddings must be 2-D (n, dim), got shape {tuple(emb.shape)}")
    emb = emb.float()
    if not torch.isfinite(emb).all():
        raise EmbtuneError(f"{what} embeddings contain NaN or infinite values")
    return F.normalize(emb, p=2, dim=1) if score_function == "cos" else emb


class StreamingTopK:
    """Running top-k of many queries over a corpus fed in chunks.

    Build it with the query embeddings, all corpus ids (in the order their embeddings will be fed),
    and k; call ``add(chunk_embeddings)`` for consecutive corpus chunks; ``result()`` returns
    ``(scores [Q, min(k, N)] float tensor on CPU, ranked id lists)``, best first, ties by ascending id.
    """

    def __init__(
        self,
        query_emb: torch.Tensor,
        corpus_ids: Sequence[str],
        k: int,
        score_function: str = "cos",
        query_chunk_size: int = 1024,
    ):
        """Prepare the running state; ValueError for a bad k, score function or chunk size."""
        if score_function not in SCORE_FUNCTIONS:
            raise ValueError(f"score_function must be one of {SCORE_FUNCTIONS}, got {score_function!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if query_chunk_size < 1:
            raise ValueError("query_chunk_size must be >= 1")
        if len(set(corpus_ids)) != len(corpus_ids):
            raise ValueError("corpus_ids contain duplicates")
        self.score_function = score_function
        self.queries = _prepare(query_emb, score_function, "query")
        self.corpus_ids = list(corpus_ids)
        self.k = k
        self.query_chunk_size = query_chunk_size
        device = self.queries.device
        order = sorted(range(len(self.corpus_ids)), key=self.corpus_ids.__getitem__)
        self._id_rank = torch.empty(len(order), dtype=torch.long, device=device)
        order_t = torch.tensor(order, dtype=torch.long, device=device)
        self._id_rank[order_t] = torch.arange(len(order), device=device)
        n_q = self.queries.shape[0]
        self._scores = torch.empty(n_q, 0, device=device)
        self._pos = torch.empty(n_q, 0, dtype=torch.long, device=device)
        self.seen = 0

    def add(self, chunk_emb: torch.Tensor) -> None:
        """Score the next corpus chunk (rows ``seen .. seen+len(chunk)`` of the ids) and merge it in."""
        chunk = _prepare(chunk_emb, self.score_function, "corpus").to(self.queries.device)
        start, n = self.seen, chunk.shape[0]
        if start + n > len(self.corpus_ids):
            raise ValueError(f"fed {start + n} corpus embeddings for {len(self.corpus_ids)} corpus ids")
        if chunk.shape[1] != self.queries.shape[1]:
            raise ValueError(f"corpus dim {chunk.shape[1]} != query dim {self.queries.shape[1]}")
        if n == 0:
            return
        ranks = self._id_rank[start : start + n]
        new_scores, new_pos = [], []
        for q0 in range(0, self.queries.shape[0], self.query_chunk_size):
            q1 = q0 + self.query_chunk_size
            scores = self.queries[q0:q1] @ chunk.T
            vals, idx = self._chunk_topk(scores, ranks)
            merged = self._merge(self._scores[q0:q1], self._pos[q0:q1], vals, idx + start)
            new_scores.append(merged[0])
            new_pos.append(merged[1])
        self._scores = torch.cat(new_scores) if new_scores else self._scores
        self._pos = torch.cat(new_pos) if new_pos else self._pos
        self.seen += n

    def _chunk_topk(self, scores: torch.Tensor, ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of one score block; rows with ties at the k-th score take the lowest ids."""
        top = min(self.k, scores.shape[1])
        vals, idx = scores.topk(top, dim=1, largest=True, sorted=False)
        thresholds = vals.min(dim=1, keepdim=True).values
        tied = (scores >= thresholds).sum(dim=1) > top
        if tied.any():
            rows = tied.nonzero().squeeze(1)
            sub, thr = scores[rows], thresholds[rows]
            n_total = len(self.corpus_ids)
            # Integer key: every score above the cutoff first, then tied ones by ascending id.
            keys = torch.where(sub > thr, ranks, 2 * n_total)
            keys = torch.where(sub == thr, ranks + n_total, keys)
            tie_idx = keys.topk(top, dim=1, largest=False).indices
            idx[rows] = tie_idx
            vals[rows] = sub.gather(1, tie_idx)
        return vals, idx

    def _merge(self, s1, p1, s2, p2) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the best k of two candidate sets, ordered by (score desc, id asc)."""
        scores, pos = torch.cat([s1, s2], dim=1), torch.cat([p1, p2], dim=1)
        by_id = self._id_rank[pos].argsort(dim=1)
        scores, pos = scores.gather(1, by_id), pos.gather(1, by_id)
        by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        return scores.gather(1, by_score), pos.gather(1, by_score)

    def result(self) -> tuple[torch.Tensor, list[list[str]]]:
        """Return ``(scores, ranked ids)``; ValueError unless every corpus embedding was fed."""
        if self.seen != len(self.corpus_ids):
            raise ValueError(f"fed {self.seen} corpus embeddings for {len(self.corpus_ids)} corpus ids")
        ids = self.corpus_ids
        return self._scores.cpu(), [[ids[p] for p in row] for row in self._pos.tolist()]


def exact_search(
    query_emb: torch.Tensor,
    corpus_emb: torch.Tensor,
    corpus_ids: Sequence[str],
    k: int,
    chunk_size: int = 50000,
    query_chunk_size: int = 1024,
    score_function: str = "cos",
) -> tuple[torch.Tensor, list[list[str]]]:
    """Exact top-k of every query over the corpus, computed corpus-chunk by corpus-chunk.

    ``query_emb`` [Q, d] and ``corpus_emb`` [N, d] (tensors or arrays), ``corpus_ids`` the N ids in
    row order, ``score_function`` ``"cos"`` (inputs are L2-normalised) or ``"dot"``. Returns
    ``(scores, ranked)``: a float tensor [Q, min(k, N)] on CPU and, per query, the ids best first,
    ties broken by ascending id. At most ``query_chunk_size x chunk_size`` scores are held at once.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if len(corpus_emb) != len(corpus_ids):
        raise ValueError(f"{len(corpus_emb)} corpus embeddings but {len(corpus_ids)} corpus ids")
    topk = StreamingTopK(
        query_emb, corpus_ids, k, score_function=score_function, query_chunk_size=query_chunk_size
    )
    for start in range(0, len(corpus_ids), chunk_size):
        topk.add(corpus_emb[start : start + chunk_size])
    return topk.result()
