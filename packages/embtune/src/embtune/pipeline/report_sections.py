"""The report sections that tell real from synthetic: what the evaluation queries are, how BM25 does
on them, and which queries the training helped or hurt most.

``add_sections(pipe, info, report)`` returns the report with, in front, ``evaluation_source`` (the
line report.md opens with; ``sources.evaluation_source``) and, after the existing sections, ``bm25``
(BM25's metrics on the same queries, or why it was not run) and ``query_changes`` (the queries whose
nDCG@10 rose or fell most, with the rank of their first relevant item before and after), read from
the per-query values the evaluation stages wrote to work/before.json, work/after.json and
work/bm25.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embtune.pipeline.run_report import query_changes
from embtune.pipeline.sources import evaluation_source

if TYPE_CHECKING:
    from embtune.pipeline.from_corpus import Pipeline


def _per_query(path: Path) -> dict[str, Any]:
    """The ``per_query`` values of an evaluation file, or {} when the file or the field is missing
    (a run folder from before per-query values were kept)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("per_query") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def add_sections(pipe: "Pipeline", info: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``report`` (build_report's dict) with the sections of the module docstring added.

    In: the run, the stages' infos by name (``pairs``, ``split``, ``bm25`` used), the report. Out: a
    new dict whose first key is ``evaluation_source``; ``report["evaluation"]`` gains ``kind``
    ("labelled" or "synthetic").
    """
    from embtune.pipeline.lexical import BM25
    from embtune.pipeline.records import AFTER, BEFORE, read_eval

    source = evaluation_source(pipe.settings, info.get("pairs", {}), info.get("split", {}))
    out: dict[str, Any] = {"evaluation_source": source["text"], **report}
    out["evaluation"] = {**report.get("evaluation", {}), "kind": source["kind"]}
    bm25_info = info.get("bm25") or {}
    if bm25_info.get("metrics"):
        out["bm25"] = bm25_info["metrics"]
    elif bm25_info.get("skipped"):
        out["bm25"] = {"skipped": bm25_info["skipped"]}
    before, after = _per_query(pipe.path(BEFORE)), _per_query(pipe.path(AFTER))
    if before and after:
        texts = {q["query_id"]: q["query"] for q in read_eval(pipe.path("eval.jsonl"))}
        out["query_changes"] = query_changes(before, after, texts, bm25=_per_query(pipe.path(BM25)))
    return out


__all__ = ["add_sections"]
