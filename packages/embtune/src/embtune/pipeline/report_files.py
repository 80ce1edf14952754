"""report.json, report.md and report.png of a from-corpus run.

report.json::

    {"before": {metric: value}, "after": {metric: value}, "delta": {metric: after - before},
     "evaluation": {"queries": n, "source": "...", "level": "chunk"},
     "counts": {...}, "timings": {stage: seconds, "total": s}, "settings": {...},
     "loss_history": [[step, loss], ...], "files": {name: path}}

The metrics are recall@1/5/10/100, ndcg@10, mrr@10 and map@100. report.png (matplotlib, Agg
backend, no display needed) shows the training loss curve beside before/after bars.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

from embtune.pipeline.evaluation import REPORT_METRICS
from embtune.utils.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger("embtune")


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


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the before/after table, then counts, timings and where the files are."""
    from embtune.report import metrics_table

    rows = {"before": report["before"]}
    if "after" in report:
        rows["after"] = report["after"]
        rows["Δ"] = report["delta"]
    lines = ["# embtune from-corpus report", ""]
    evaluation = report.get("evaluation", {})
    if evaluation:
        lines += [f"Evaluated on {evaluation.get('queries', '?')} queries ({evaluation.get('source', '')}), "
                  f"retrieving among {evaluation.get('chunks', '?')} chunks.", ""]
    lines += [metrics_table(rows, keys=REPORT_METRICS), ""]
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
