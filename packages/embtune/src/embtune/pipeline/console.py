"""What a person sees: one line per stage while the run goes, and a one-screen summary at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from embtune.pipeline.evaluation import REPORT_METRICS


def make_console(quiet: bool = False):
    """A rich Console on stderr (stdout stays free for machine-readable output); ``quiet`` silences it."""
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)


def quiet_libraries() -> None:
    """Turn off the progress bars libraries draw on their own (transformers' weight loading), without
    importing them: the Hub's environment switch for later imports, the live switch if already loaded."""
    import os
    import sys

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def stage_line(console, name: str, status: str, seconds: float | None = None, detail: str = "") -> None:
    """Print ``✓ name  detail  (1.2 s)`` for a finished stage, ``↷ name  unchanged, skipped`` for a skip."""
    mark = {"done": "[green]✓[/]", "skipped": "[dim]↷[/]", "start": "[cyan]→[/]"}.get(status, "•")
    timing = f" [dim]({seconds:.1f} s)[/]" if seconds is not None else ""
    text = "unchanged, skipped" if status == "skipped" else detail
    console.print(f"{mark} [bold]{name}[/] {text}{timing}")


def print_summary(console, report: dict[str, Any], run_dir: str | Path) -> None:
    """The end-of-run summary: what the evaluation queries are, the before → after table (with BM25's
    column when it ran) and where the files are."""
    from rich.table import Table

    run_dir = Path(run_dir)
    evaluation = report.get("evaluation", {})
    table = Table(title=f"Retrieval on {evaluation.get('queries', '?')} queries "
                        f"({evaluation.get('source', 'held out')})", title_justify="left")
    table.add_column("metric")
    table.add_column("before", justify="right")
    has_after = "after" in report
    if has_after:
        table.add_column("after", justify="right")
        table.add_column("Δ", justify="right")
    bm25 = {} if "skipped" in (report.get("bm25") or {}) else report.get("bm25") or {}
    if bm25:
        table.add_column("BM25", justify="right", style="dim")
    for key in REPORT_METRICS:
        if key not in report["before"]:
            continue
        cells = [key, f"{report['before'][key]:.4f}"]
        if has_after and key in report["after"]:
            delta = report["delta"][key]
            color = "green" if delta > 0 else ("red" if delta < 0 else "dim")
            cells += [f"{report['after'][key]:.4f}", f"[{color}]{delta:+.4f}[/]"]
        elif has_after:
            cells += ["", ""]
        if bm25:
            cells.append(f"{bm25[key]:.4f}" if key in bm25 else "")
        table.add_row(*cells)
    if report.get("evaluation_source"):
        console.print(f"[bold]evaluated on[/] {report['evaluation_source']}", highlight=False)
    console.print(table)
    counts = report.get("counts", {})
    if counts:
        console.print("  ".join(f"{k}: {v}" for k, v in counts.items()), style="dim", highlight=False)
    total = report.get("timings", {}).get("total_of_stages")
    console.print(f"[bold]run folder[/] {run_dir}" + (f"  [dim](stages took {total:.0f} s in all)[/]" if total else ""),
                  highlight=False)
    files = Table.grid(padding=(0, 2))
    for name, path in report.get("files", {}).items():
        files.add_row(f"  {name}", str(path))
    console.print(files, style="dim")
