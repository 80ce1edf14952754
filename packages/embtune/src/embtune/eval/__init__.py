"""Retrieval evaluation: one metrics implementation (ST-compatible), exact chunked search, end-to-end eval,
BM25 + dense fusion and two-stage (dense + reranker) rows.

The names below load on first use (PEP 562), so that ``embtune.eval.metrics`` and ``embtune.eval.bm25``
can be imported without torch (the command line checks its inputs before torch loads).
"""
from __future__ import annotations

from embtune.lazy import lazy_exports


_EXPORTS = {
    "METRIC_NAMES": "embtune.eval.metrics",
    "retrieval_metrics": "embtune.eval.metrics",
    "evaluate_retrieval": "embtune.eval.retrieval",
    "dense_rankings": "embtune.eval.retrieval",
    "reciprocal_rank_fusion": "embtune.eval.hybrid",
    "hybrid_rankings": "embtune.eval.hybrid",
    "two_stage_eval": "embtune.eval.two_stage",
    "StreamingTopK": "embtune.eval.search",
    "exact_search": "embtune.eval.search",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
