"""Hold out whole source documents for evaluation, so no held-out query's document is trained on.

Documents (``Pair.doc_id``) are shuffled with ``seed`` and about ``eval_fraction`` of them are held
out. Every pair of a held-out document leaves the training set; the pairs of held-out documents
made by builders that are fit for evaluation become eval queries whose relevant chunks are their
positives (a query text asked of several chunks gets them all). Builders whose query is copied
from the chunk (``VERBATIM_BUILDERS``: inverse-cloze sentences, keyword lists) would make
evaluation trivially easy, so by default they never give eval queries, and held-out documents are
drawn only among documents that have at least one other pair. Finally a training pair whose query
text is also an eval query is dropped, so held-out queries are never trained on either.
"""
from __future__ import annotations

import hashlib
import random
from typing import Collection, Sequence

from embtune.errors import ConfigError
from embtune.pairs.types import EvalQuery, Pair

VERBATIM_BUILDERS = frozenset({"heuristic:cloze", "heuristic:keywords"})


def query_id(text: str) -> str:
    """Stable id of an eval query: ``q-`` + 12 hex digits of sha256(text)."""
    return "q-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def split_by_document(pairs: Sequence[Pair], eval_fraction: float = 0.1, seed: int = 0, *,
                      eval_builders: Collection[str] | None = None) -> tuple[list[Pair], list[EvalQuery]]:
    """Split pairs into training pairs and held-out eval queries by source document.

    In: pairs; ``eval_fraction`` in [0, 1): share of documents held out (rounded, at least one when
    > 0); ``seed``; ``eval_builders`` the builders whose queries may become eval queries (default:
    all but ``VERBATIM_BUILDERS``). Out: ``(train pairs in input order, eval queries)``. Raises
    ConfigError for a fraction outside [0, 1) or when there are too few documents to hold any out
    (fewer than two documents, or none with an eligible pair).
    """
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) \
            or not 0.0 <= eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    pairs = list(pairs)
    if eval_fraction == 0:
        return pairs, []

    def eligible(pair: Pair) -> bool:
        """May this pair's query become an eval query?"""
        if eval_builders is not None:
            return pair.builder in eval_builders
        return pair.builder not in VERBATIM_BUILDERS

    docs = sorted({p.doc_id for p in pairs})
    candidates = sorted({p.doc_id for p in pairs if eligible(p)})
    if len(docs) < 2 or not candidates:
        raise ConfigError(f"cannot hold out documents for evaluation: {len(docs)} document(s), "
                          f"{len(candidates)} with pairs usable as eval queries; use eval_fraction=0")
    n_eval = min(len(candidates), len(docs) - 1, max(1, round(eval_fraction * len(docs))))
    rng = random.Random(seed)
    held = set(rng.sample(candidates, n_eval))

    eval_map: dict[str, list[str]] = {}
    for pair in pairs:
        if pair.doc_id in held and eligible(pair):
            text = pair.query.strip()
            if not text:
                continue
            relevant = eval_map.setdefault(text, [])
            if pair.positive_id not in relevant:
                relevant.append(pair.positive_id)
    eval_queries = [EvalQuery(query_id=query_id(q), query=q, relevant=rel) for q, rel in eval_map.items()]
    train = [p for p in pairs if p.doc_id not in held and p.query.strip() not in eval_map]
    return train, eval_queries
