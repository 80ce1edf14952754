"""Retrieval evaluation: one metrics implementation (ST-compatible), exact chunked search, end-to-end eval."""
from embtune.eval.metrics import METRIC_NAMES, retrieval_metrics
from embtune.eval.retrieval import evaluate_retrieval
from embtune.eval.search import StreamingTopK, exact_search

__all__ = ["METRIC_NAMES", "StreamingTopK", "evaluate_retrieval", "exact_search", "retrieval_metrics"]
