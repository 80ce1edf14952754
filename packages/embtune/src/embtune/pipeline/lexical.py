"""The ``bm25`` stage: the run's evaluation queries answered by BM25, the keyword baseline.

    bm25    chunks.jsonl + eval.jsonl -> work/bm25.json   (metrics at the run's level, per query too)

BM25 ranks the same chunks for the same queries as the dense model (``embtune.eval.bm25``, bm25s),
and the ranking is scored by the same code (``evaluation.evaluate_rankings``), so the report's BM25
row shows whether dense retrieval beats keyword search on this corpus at all. bm25s is optional:
without it the stage records why and the report says so (the stage key names bm25s' version, so
installing it later reruns the stage).
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embtune.eval import bm25
from embtune.pipeline.evaluation import evaluate_rankings, headline, search_depth
from embtune.pipeline.records import read_chunks, read_eval
from embtune.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from embtune.pipeline.from_corpus import Pipeline

BM25 = "work/bm25.json"


def bm25_stage(chunks_path: Path, eval_path: Path, out_path: Path, level: str) -> dict[str, Any]:
    """Rank every chunk for each eval query with BM25 and score it at ``level``; write all metrics and
    the per-query values to ``out_path``.

    Out: ``{"metrics": the report metrics, "queries": n, "level": level}``, or ``{"skipped": why}``
    when bm25s is not installed (nothing written).
    """
    if not bm25.available():
        return {"skipped": f"bm25s is not installed ({bm25.INSTALL})"}
    chunks = read_chunks(chunks_path, fields=("id", "doc_id", "text"))
    queries = read_eval(eval_path, {c["id"] for c in chunks})
    rankings = bm25.bm25_rankings([c["text"] for c in chunks], [c["id"] for c in chunks],
                                  [q["query"] for q in queries], search_depth(chunks, level))
    metrics = evaluate_rankings(chunks, queries, rankings, level, per_query=True)
    atomic_write_json(out_path, metrics)
    return {"metrics": headline(metrics), "queries": len(queries), "level": level}


def run_bm25(pipe: "Pipeline") -> dict[str, Any]:
    """Run the bm25 stage in ``pipe`` (after the data stages); returns its info."""
    settings = pipe.settings
    chunks, evals = pipe.path("chunks.jsonl"), pipe.path("eval.jsonl")
    level = "document" if settings.eval_labels is not None else "chunk"
    try:
        version = metadata.version("bm25s") if bm25.available() else None
    except metadata.PackageNotFoundError:
        version = None
    return pipe.stage("bm25", {"chunks": chunks, "eval": evals}, {"level": level, "bm25s": version},
                      [BM25] if version else [], lambda: bm25_stage(chunks, evals, pipe.path(BM25), level))


__all__ = ["BM25", "bm25_stage", "run_bm25"]
