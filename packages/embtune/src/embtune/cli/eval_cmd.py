"""``embtune eval MODEL --data BEIR_DIR``: retrieval metrics of a model on a BEIR split."""
from __future__ import annotations

import json

import click

from embtune.cli.options import resolve_model


@click.command("eval")
@click.argument("model", required=False)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="BEIR folder (corpus.jsonl, ...).")
@click.option("--split", default="test", show_default=True, help="qrels split to evaluate.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--max-seq-length", type=click.IntRange(8, 32768), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def eval_command(model, data_dir, split, batch_size, max_seq_length, as_json):
    """Evaluate MODEL (default: the embedded MiniLM) on a BEIR folder: recall, nDCG, MRR, MAP."""
    from embtune.data import load_beir
    from embtune.errors import DataFormatError
    from embtune.eval import evaluate_retrieval
    from embtune.models import FastSentenceTransformer

    data = load_beir(data_dir)
    if split not in data.qrels:
        raise DataFormatError(f"no qrels split {split!r} (found: {', '.join(sorted(data.qrels)) or 'none'})",
                              path=data_dir)
    st = FastSentenceTransformer.from_pretrained(resolve_model(model), max_seq_length=max_seq_length,
                                                 for_inference=True)
    metrics = evaluate_retrieval(st, data.corpus, data.queries, data.qrels[split], batch_size=batch_size,
                                 show_progress=not as_json)
    if as_json:
        click.echo(json.dumps(metrics))
        return
    from embtune.report import metrics_table

    click.echo(metrics_table({"model": metrics}))
