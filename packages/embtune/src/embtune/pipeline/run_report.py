"""report.json, report.md and report.png of a from-corpus run.

report.json::

    {"evaluation_source": "your labelled queries (...)" | "synthetic queries from builder X — ...",
     "before": {metric: value}, "after": {metric: value}, "delta": {metric: after - before},
     "evaluation": {"queries": n, "source": "...", "level": "chunk", "kind": "labelled" | "synthetic"},
     "counts": {...}, "timings": {stage: seconds, "total": s}, "settings": {...},
     "loss_history": [[step, loss], ...], "files": {name: path},
     "bm25": {metric: value} | {"skipped": why},
     "query_changes": {"improved": [row, ...], "worse": [row, ...]}}

A ``query_changes`` row: ``{"query_id", "query", "rank_before", "rank_after", "ndcg@10_before",
"ndcg@10_after"}`` (+ ``"rank_bm25"``), a rank being that of the query's first relevant item (None:
not in the first 100). report.md opens with the evaluation source, so nobody mistakes synthetic
queries for their users' searches.

The metrics are recall@1/5/10/100, ndcg@10, mrr@10 and map@100. report.png (matplotlib, Agg
backend, no display needed) shows the training loss curve beside before/after bars.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

from embtune.pipeline.evaluation import REPORT_KS, REPORT_METRICS
from embtune.tables import markdown_table
from embtune.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger("embtune")
CHANGED_QUERIES = 10
"""How many most-improved and most-worsened queries the report lists."""
BM25_ROW = "BM25 (keywords)"


def build_report(before: dict[str, float], after: dict[str, float] | None, **sections: Any) -> dict[str, Any]:
    """The report.json object: ``before``/``after`` metrics (REPORT_METRICS only), their delta, and the
    given sections (evaluation, counts, timings, settings, loss_history, files) as they are."""
    before = {k: before[k] for k in REPORT_METRICS if k in before}
    report: dict[str, Any] = {"before": before}
    if after is not None:
        after = {k: after[k] for k in REPORT_METRICS if k in after}
        report["after"] = after
        report["delta"] = {k: after[k] - before[k] for k in after if k in before}
    report.update(sections)
    return report


def query_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], texts: dict[str, str],
                  n: int = CHANGED_QUERIES, bm25: dict[str, dict[str, Any]] | None = None) -> dict[str, list]:
    """The ``n`` queries that improved most and the ``n`` that got worse.

    In: per-query values before and after training (``{query id: {"ndcg@10": v, "rank": r or None}}``,
    ``embtune.eval.metrics.per_query_metrics``), the query texts, optionally BM25's per-query values.
    A query's change is its nDCG@10 difference, ties broken by the change of 1/rank (so a relevant
    item moving from rank 40 to 12 counts too); unchanged queries are in neither list. Out:
    ``{"improved": rows best first, "worse": rows worst first}`` (rows: see the module docstring).
    """
    def rr(rank: Any) -> float:
        return 1.0 / rank if rank else 0.0

    changes = []
    for qid in before.keys() & after.keys():
        b, a = before[qid], after[qid]
        key = (a.get("ndcg@10", 0.0) - b.get("ndcg@10", 0.0), rr(a.get("rank")) - rr(b.get("rank")))
        row = {"query_id": qid, "query": texts.get(qid, ""), "rank_before": b.get("rank"),
               "rank_after": a.get("rank"), "ndcg@10_before": b.get("ndcg@10"), "ndcg@10_after": a.get("ndcg@10")}
        if bm25 is not None and qid in bm25:
            row["rank_bm25"] = bm25[qid].get("rank")
        changes.append((key, qid, row))
    improved = sorted((c for c in changes if c[0] > (0.0, 0.0)), key=lambda c: (-c[0][0], -c[0][1], c[1]))
    worse = sorted((c for c in changes if c[0] < (0.0, 0.0)), key=lambda c: (c[0][0], c[0][1], c[1]))
    return {"improved": [c[2] for c in improved[:n]], "worse": [c[2] for c in worse[:n]]}


def _rank(rank: Any) -> str:
    return str(rank) if rank else f">{max(REPORT_KS)}"


def _cell(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _changes_markdown(changes: dict[str, list], level: str) -> list[str]:
    """The improved / worse query tables of report.md."""
    lines: list[str] = []
    item = "document" if level.startswith("document") else "chunk"
    for title, key in (("Queries that improved most", "improved"), ("Queries that got worse", "worse")):
        rows = changes.get(key) or []
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["None.", ""]
            continue
        bm25 = any("rank_bm25" in r for r in rows)
        lines += [f"Rank of the first relevant {item} before → after training (>{max(REPORT_KS)}: not in the "
                  f"first {max(REPORT_KS)}){'; BM25 for comparison' if bm25 else ''}.", ""]
        body = []
        for r in rows:
            cells = [_cell(r["query"]), f"{_rank(r['rank_before'])} → {_rank(r['rank_after'])}",
                     f"{r['ndcg@10_before']:.3f} → {r['ndcg@10_after']:.3f}"]
            if bm25:
                cells.append(_rank(r.get("rank_bm25")) if "rank_bm25" in r else "")
            body.append(cells)
        lines += [markdown_table(["query", "rank", "nDCG@10", *(["BM25 rank"] if bm25 else [])], body), ""]
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the evaluation source (first line), the before/after table (with a BM25 row when
    there is one), the queries that changed most, then counts, timings and where the files are."""
    from embtune.tables import metrics_table

    rows = {"before": report["before"]}
    if "after" in report:
        rows["after"] = report["after"]
        rows["Δ"] = report["delta"]
    bm25 = report.get("bm25") or {}
    if bm25 and "skipped" not in bm25:
        rows[BM25_ROW] = bm25
    source = report.get("evaluation_source")
    lines = [f"# embtune from-corpus report: evaluated on {source}" if source else "# embtune from-corpus report", ""]
    evaluation = report.get("evaluation", {})
    if evaluation:
        lines += [f"Evaluated on {evaluation.get('queries', '?')} queries ({evaluation.get('source', '')}), "
                  f"retrieving among {evaluation.get('chunks', '?')} chunks.", ""]
    lines += [metrics_table(rows, keys=REPORT_METRICS), ""]
    if BM25_ROW in rows:
        lines += [f"{BM25_ROW}: the same queries answered by keyword search (bm25s); if it beats the dense "
                  "rows, dense retrieval is not paying off on this corpus yet.", ""]
    elif "skipped" in bm25:
        lines += [f"No BM25 row: {bm25['skipped']}.", ""]
    # -- model selection (embtune.pipeline.selection): its own section, owned there --
    from embtune.pipeline.selection import report_lines

    lines += report_lines(report.get("selection"))
    from embtune.pipeline.reranking import report_lines as two_stage_lines

    lines += two_stage_lines(report.get("two_stage"))
    if report.get("query_changes"):
        lines += _changes_markdown(report["query_changes"], evaluation.get("level", "chunk"))
    for title, key in (("Counts", "counts"), ("Timings (seconds)", "timings"), ("Files", "files")):
        section = report.get(key) or {}
        if section:
            lines += [f"## {title}", ""] + [f"- {k}: {_fmt(v)}" for k, v in section.items()] + [""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def report_png(report: dict[str, Any]) -> bytes:
    """report.png as bytes: loss curve (left) and before/after bars of REPORT_METRICS (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), dpi=100)
    ax_loss, ax_bars = fig.subplots(1, 2)
    history = report.get("loss_history") or []
    if history:
        steps, losses = zip(*history)
        ax_loss.plot(steps, losses, marker="o" if len(steps) < 30 else None, color="tab:blue")
    else:
        ax_loss.text(0.5, 0.5, "no training steps", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    keys = [k for k in REPORT_METRICS if k in report["before"]]
    xs = range(len(keys))
    width = 0.4
    ax_bars.bar([x - width / 2 for x in xs], [report["before"][k] for k in keys], width, label="before")
    if "after" in report:
        ax_bars.bar([x + width / 2 for x in xs], [report["after"].get(k, 0.0) for k in keys], width, label="after")
    ax_bars.set_xticks(list(xs), keys, rotation=30, ha="right")
    evaluation = report.get("evaluation") or {}
    ax_bars.set(title=f"retrieval: {evaluation.get('queries', '?')} queries ({evaluation.get('source', 'held out')})",
                ylim=(0, 1))
    ax_bars.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(run_dir: str | os.PathLike, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and report.png to ``run_dir`` atomically; returns the paths written.

    Without matplotlib (``pip install 'embtune[corpus]'``) report.png is left out and a warning says
    so: the metrics of a finished run are never lost to a missing plotting library.
    """
    run_dir = Path(run_dir)
    paths = [atomic_write_json(run_dir / "report.json", report),
             atomic_write_text(run_dir / "report.md", report_markdown(report))]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("report.png skipped: matplotlib is not installed (pip install 'embtune[corpus]')")
        return paths
    paths.append(atomic_write_bytes(run_dir / "report.png", report_png(report)))
    return paths
