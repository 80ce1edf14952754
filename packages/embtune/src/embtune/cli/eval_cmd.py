"""``embtune eval [MODEL] --data BEIR_DIR``: retrieval metrics by exact search, one row per embedding size.

The search is the core's own (`embtune.eval.evaluate_retrieval`: exact cosine search over the whole
corpus, chunked in bounded memory). Every ``--dims`` (Matryoshka truncation) gives a row.
``--json`` prints ONE JSON list of rows ``{"dims", "ndcg@10", "recall@10", "mrr@10", "map@100",
"num_queries"}``. Approximate FAISS indexes (``--index HNSW32``...) and BM25 + dense hybrid rows are
the embtune-faiss package's own command, ``embtune-faiss eval``: the core never imports an integration.
``--reranker R`` (repeatable) prints dense, BM25 + dense and dense + rerank rows instead
(`embtune.cli.eval_rerank`).
"""
from __future__ import annotations

import json

import click

from embtune.errors import ConfigError
from embtune.eval.tasks import TASKS

KS = (1, 5, 10, 100)
JSON_KEYS = ("ndcg@10", "recall@10", "mrr@10", "map@100")
TABLE_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")


def parse_dims(text: str | None) -> list[int] | None:
    """``"384,256,128"`` → ``[384, 256, 128]``; None/"" → None. ConfigError for a non-integer or a
    value below 1."""
    if not text:
        return None
    dims = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ConfigError(f"--dims takes positive integers separated by commas, got {text!r}")
        dims.append(int(part))
    return dims


def check_dims(dims: list[int] | None, full: int) -> list[int]:
    """The sizes to evaluate: ``dims`` without repeats, or ``[full]`` when None. ConfigError for a
    size above ``full`` (the model's embedding size; not checked when it is 0, unknown)."""
    bad = [d for d in dims or () if full and d > full]
    if bad:
        raise ConfigError(f"dims must be integers in 1..{full} (the model's size), got {bad[0]!r}")
    return list(dict.fromkeys(dims)) if dims else [full]


@click.command("eval")
@click.argument("model", required=False)
@click.option("--data", "data_dir", default=None, type=click.Path(), help="BEIR folder (corpus.jsonl, ...).")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="Evaluate clustering, classification or pair similarity instead of retrieval.")
@click.option("--task-data", type=click.Path(), default=None, help="The --task JSONL file.")
@click.option("--base", default=None, help="With --task: a base model for a row before MODEL.")
@click.option("--split", default="test", show_default=True, help="qrels split to evaluate.")
@click.option("--dims", default=None,
              help="Matryoshka sizes to sweep, e.g. 384,256,128 (default: full size).")
@click.option("--reranker", "rerankers", multiple=True,
              help="Cross-encoder (folder, hub id or default) reranking the dense top; repeat for several.")
@click.option("--rerank-top", type=click.IntRange(1), default=None,
              help="With --reranker: dense candidates reranked per query.  [default: 100]")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--max-seq-length", type=click.IntRange(8, 32768), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of rows instead of the table.")
def eval_command(model, data_dir, split, dims, batch_size, max_seq_length, as_json, task, task_data, base,
                 rerankers=(), rerank_top=None):
    """Evaluate MODEL (default: the embedded MiniLM) on a BEIR folder by exact search, or on a --task file."""
    from embtune.cli.eval_tasks import check_modes, run_task_eval

    check_modes(data_dir, task, task_data, base, dims)
    if rerankers or rerank_top is not None:  # two-stage rows: embtune.cli.eval_rerank
        from embtune.cli.eval_rerank import run_rerank_eval

        return run_rerank_eval(model, data_dir, split, rerankers, rerank_top, batch_size=batch_size,
                               max_seq_length=max_seq_length, as_json=as_json, task=task, dims=dims)
    if task:
        return run_task_eval(model, base, task, task_data, batch_size, max_seq_length, as_json)
    from embtune.data import load_beir

    # The inputs first, so a bad folder fails at once, before torch loads.
    dim_list = parse_dims(dims)
    data = load_beir(data_dir)
    qrels = data.split_qrels(split)
    from embtune.eval.retrieval import evaluate_retrieval
    from embtune.models.inference import embedding_dim, load_inference_model

    st = load_inference_model(model, max_seq_length=max_seq_length)
    full = embedding_dim(st)
    rows = []
    for dim in check_dims(dim_list, full):
        metrics = evaluate_retrieval(st, data.corpus, data.queries, qrels, ks=KS, batch_size=batch_size,
                                     show_progress=not as_json, truncate_dim=None if dim == full else dim)
        rows.append({"dims": dim, **metrics})
    if as_json:
        click.echo(json.dumps([{key: row[key] for key in ("dims", *JSON_KEYS, "num_queries")} for row in rows]))
        return
    from embtune.tables import markdown_table

    click.echo(markdown_table(["dims", *TABLE_KEYS],
                              [[str(row["dims"]), *(f"{row[k]:.4f}" for k in TABLE_KEYS)] for row in rows]))
