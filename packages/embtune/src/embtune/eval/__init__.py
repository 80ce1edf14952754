"""Retrieval evaluation: one metrics implementation (ST-compatible), exact chunked search, end-to-end eval,
BM25 + dense fusion and two-stage (dense + reranker) rows.

The names below load on first use (PEP 562), so that ``embtune.eval.metrics`` and ``embtune.eval.bm25``
can be imported without torch (the command line checks its inputs before torch loads).
"""
from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    """In: an exported name. Out: the object, imported from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'embtune.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
