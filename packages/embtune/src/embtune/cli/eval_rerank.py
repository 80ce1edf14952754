"""``embtune eval [MODEL] --data BEIR_DIR --reranker R [--reranker R2 ...] [--rerank-top N]``: two-stage rows.

The work is `embtune.eval.two_stage.two_stage_eval`: MODEL's dense top-N (exact search, computed once),
then one table with a row per method: ``dense``, ``hybrid (BM25 + dense)`` (when bm25s is installed)
and ``dense + rerank (R)`` for each ``--reranker`` in the order given (a base reranker and a tuned one
give the before/after rows). ``--reranker`` is a folder or hub id of a cross-encoder, or ``default``:
the embedded MiniLM with a fresh (untrained) head, a smoke test rather than a reranker. Columns: the
metrics and ``ms/query`` (dense and hybrid: the first stage per query, corpus encoding excluded;
rerank rows: the time reranking adds per query). ``--json`` prints ONE JSON list of rows
``{"method", "ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100", "num_queries", "ms_per_query"}``.
"""
from __future__ import annotations

import json

import click

from embtune.errors import ConfigError

KS = (1, 5, 10, 100)
DEFAULT_TOP = 100
JSON_KEYS = ("method", "ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100", "num_queries",
             "ms_per_query")


def check_rerank_options(rerankers, rerank_top, task=None, dims=None) -> None:
    """In: the ``eval`` options. ConfigError (one line) when ``--rerank-top`` comes without
    ``--reranker``, or ``--reranker`` with ``--task`` or ``--dims`` (rows are at the model's full size)."""
    if not rerankers:
        if rerank_top is not None:
            raise ConfigError("--rerank-top needs --reranker")
        return
    if task:
        raise ConfigError("--reranker reranks retrieval (--data), not --task")
    if dims:
        raise ConfigError("--reranker evaluates at the model's full size: leave out --dims")


def _check_sources(rerankers) -> None:
    """ModelLoadError (one line) for a ``--reranker`` local folder that is missing or not a model, before
    anything loads (hub ids are checked when they load)."""
    from embtune.models.loading import inspect_source
    from embtune.models.names import resolve_model

    for name in rerankers:
        inspect_source(resolve_model(name))


def rows_table(rows) -> str:
    """Markdown table of two-stage ``rows``: method, the metrics, ms/query, queries."""
    from embtune.eval.two_stage import REPORT_KEYS
    from embtune.tables import markdown_table

    body = [[str(row["method"]), *(f"{row[k]:.4f}" if k in row else "—" for k in REPORT_KEYS),
             f"{row['ms_per_query']:.2f}", str(row["num_queries"])] for row in rows]
    return markdown_table(["method", *REPORT_KEYS, "ms/query", "queries"], body)


def run_rerank_eval(model, data_dir, split, rerankers, rerank_top, *, batch_size, max_seq_length,
                    as_json, task=None, dims=None) -> None:
    """Evaluate ``model`` on the BEIR folder ``data_dir`` (qrels ``split``) with each of ``rerankers``
    (folders, hub ids or ``"default"``; repeats dropped) reranking its top ``rerank_top`` (None: 100)
    dense candidates; print the table, or the JSON list with ``as_json``. The folder and the reranker
    folders are checked before any model loads; errors are EmbtuneErrors (one line from the CLI)."""
    check_rerank_options(rerankers, rerank_top, task, dims)
    from embtune.data import load_beir

    data = load_beir(data_dir)
    qrels = data.split_qrels(split)
    names = list(dict.fromkeys(rerankers))
    _check_sources(names)
    from embtune.eval.two_stage import two_stage_eval
    from embtune.models.inference import load_inference_model

    st = load_inference_model(model, max_seq_length=max_seq_length)
    rows = two_stage_eval(st, {name: name for name in names}, data.corpus, data.queries, qrels,
                          top=DEFAULT_TOP if rerank_top is None else rerank_top, ks=KS, batch_size=batch_size,
                          show_progress=not as_json)
    if as_json:
        click.echo(json.dumps([{key: row[key] for key in JSON_KEYS} for row in rows]))
        return
    click.echo(rows_table(rows))
