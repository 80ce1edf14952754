"""Tables a person reads: metrics side by side, as plain Markdown."""
from __future__ import annotations

DEFAULT_KEYS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "map@100")


def metrics_table(rows: dict[str, dict[str, float]], keys: tuple[str, ...] = DEFAULT_KEYS,
                  extra: dict[str, dict[str, str]] | None = None) -> str:
    """Render ``{row name: {metric: value}}`` as a Markdown table with the given metric columns.

    Metrics missing from a row print as "—"; ``extra`` adds string columns per row (e.g. minutes).
    """
    extra = extra or {}
    extra_cols = sorted({c for cols in extra.values() for c in cols})
    present = [k for k in keys if any(k in r for r in rows.values())]
    head = ["", *present, *extra_cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, metrics in rows.items():
        cells = [f"{metrics[k]:.4f}" if k in metrics else "—" for k in present]
        cells += [extra.get(name, {}).get(c, "") for c in extra_cols]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
