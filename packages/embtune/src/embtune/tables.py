"""Tables a person reads: metrics side by side, as plain Markdown."""
from __future__ import annotations

DEFAULT_KEYS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "map@100")


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """The one Markdown table writer: a header row, the ``|---|`` rule, one line per row of cells
    (strings, already formatted). Out: the table, lines joined by newlines, no trailing newline."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def metrics_table(rows: dict[str, dict[str, float]], keys: tuple[str, ...] = DEFAULT_KEYS,
                  extra: dict[str, dict[str, str]] | None = None) -> str:
    """Render ``{row name: {metric: value}}`` as a Markdown table with the given metric columns.

    Metrics missing from a row print as "—"; ``extra`` adds string columns per row (e.g. minutes).
    """
    extra = extra or {}
    extra_cols = sorted({c for cols in extra.values() for c in cols})
    present = [k for k in keys if any(k in r for r in rows.values())]
    body = [[name, *(f"{metrics[k]:.4f}" if k in metrics else "—" for k in present),
             *(extra.get(name, {}).get(c, "") for c in extra_cols)] for name, metrics in rows.items()]
    return markdown_table(["", *present, *extra_cols], body)
