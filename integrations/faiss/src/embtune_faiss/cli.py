"""``embtune-faiss eval [MODEL] --data BEIR_DIR``: retrieval metrics through FAISS indexes, one row per setting.

The command of this package (``[project.scripts]`` in its pyproject.toml), not of the core ``embtune``
command line, which never imports an integration (its ``embtune eval`` ranks by exact search).
The corpus and queries are encoded once; every ``--index`` (a FAISS factory string, repeatable),
every ``--dims`` (Matryoshka truncation) and, with ``--hybrid``, BM25 + dense fusion gives a row.
``--json`` prints ONE JSON list of rows ``{"index", "dims", "method", "ndcg@10", "recall@10",
"mrr@10", "map@100", "recall_vs_exact@10"}``. Errors print one line ``embtune: error: ...`` and exit 2,
as in the core command line.
"""
from __future__ import annotations

import json

import click

from embtune.cli import EmbtuneGroup
from embtune.cli.eval_cmd import parse_dims
from embtune.cli.output import configure_cli_output


@click.group(cls=EmbtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks and every library's warnings and logs.")
@click.option("-v", "--verbose", is_flag=True, help="Log what embtune decides (dtype, pooling).")
def main(debug: bool, verbose: bool) -> None:
    """FAISS indexes over an embtune model's embeddings."""
    configure_cli_output(debug=debug, verbose=verbose)


@main.command("eval")
@click.argument("model", required=False)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="BEIR folder (corpus.jsonl, ...).")
@click.option("--split", default="test", show_default=True, help="qrels split to evaluate.")
@click.option("--index", "indexes", multiple=True, default=("Flat",), show_default=True,
              help="FAISS factory string (Flat, HNSW32, IVF64,Flat, IVF64,PQ48...); repeat for several.")
@click.option("--dims", default=None,
              help="Matryoshka sizes to sweep, e.g. 384,256,128 (default: full size).")
@click.option("--hybrid", is_flag=True, help="Also rank with BM25 + dense reciprocal rank fusion.")
@click.option("--search-params", default=None,
              help="FAISS search parameters, e.g. nprobe=32,efSearch=128 (default nprobe=16, efSearch=64).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--max-seq-length", type=click.IntRange(8, 32768), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of rows instead of the table.")
def eval_command(model, data_dir, split, indexes, dims, hybrid, search_params, batch_size, max_seq_length,
                 as_json):
    """Evaluate MODEL (default: the embedded MiniLM) on a BEIR folder through FAISS indexes."""
    from embtune.data import load_beir

    # The inputs first, so a bad folder fails at once, before torch and FAISS load.
    dim_list = parse_dims(dims)
    data = load_beir(data_dir)
    qrels = data.split_qrels(split)
    from embtune.models.inference import load_inference_model
    from embtune_faiss.evaluation import JSON_KEYS, ROW_KEYS, evaluate, rows_table

    st = load_inference_model(model, max_seq_length=max_seq_length)
    rows = evaluate(st, data.corpus, data.queries, qrels, indexes=list(indexes), dims=dim_list, hybrid=hybrid,
                    ks=(1, 5, 10, 100), batch_size=batch_size, search_params=search_params,
                    show_progress=not as_json)
    if as_json:
        click.echo(json.dumps([{key: row[key] for key in (*ROW_KEYS, *JSON_KEYS)} for row in rows]))
        return
    click.echo(rows_table(rows))
