"""``embtune from-corpus CORPUS --out DIR``: documents in, a fine-tuned and evaluated model out."""
from __future__ import annotations

import click

from embtune.cli.options import DEFAULT_MODEL, FiniteFloatRange


def data_options(fn):
    """The options shared by ``from-corpus`` and ``pairs``: model, pair builder, labels, chunking, seed."""
    options = [
        click.option("--out", "out", required=True, type=click.Path(), help="Run folder DIR."),
        click.option("--model", default=None, show_default=DEFAULT_MODEL, help="Model folder or hub id."),
        click.option("--pairs", "pairs", default="auto", show_default=True,
                     type=click.Choice(["auto", "heuristic", "llm", "labels"]),
                     help="Pair builder; auto = labels if --labels, else llm if --llm-url, else heuristic."),
        click.option("--labels", type=click.Path(), default=None,
                     help="Training qrels TSV (query-id, doc-id, score) over the corpus's documents."),
        click.option("--queries", type=click.Path(), default=None, help="Queries JSONL for --labels/--eval-labels."),
        click.option("--eval-labels", type=click.Path(), default=None,
                     help="Evaluate on these labelled queries (qrels TSV) instead of a held-out split."),
        click.option("--negatives", type=click.IntRange(0), default=1, show_default=True,
                     help="Hard negatives mined per pair."),
        click.option("--llm-url", default=None, help="OpenAI-compatible endpoint for --pairs llm."),
        click.option("--llm-model", default=None, help="Model name for --llm-url."),
        click.option("--seed", type=click.IntRange(0), default=42, show_default=True),
        click.option("--force", is_flag=True, help="Start over: remove DIR's earlier stage outputs."),
        click.option("--chunk-tokens", type=click.IntRange(16), default=256, show_default=True,
                     help="Chunk size in model tokens (capped at the model's max length)."),
        click.option("--chunk-overlap", type=click.IntRange(0), default=32, show_default=True),
        click.option("--eval-fraction", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.2,
                     show_default=True, help="Share of documents held out for evaluation."),
        click.option("--max-seq-length", type=click.IntRange(8, 32768), default=None),
        click.option("--quiet", is_flag=True, help="No progress bars or stage lines."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("from-corpus")
@click.argument("corpus", type=click.Path())
@data_options
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Cap the training steps.")
@click.option("--batch-size", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=FiniteFloatRange(0, min_open=True), default=2e-4, show_default=True)
@click.option("--lora-r", type=click.IntRange(1), default=16, show_default=True)
@click.option("--qlora", is_flag=True, help="4-bit base (bitsandbytes nf4) + LoRA.")
@click.option("--full", is_flag=True, help="Train every weight instead of a LoRA adapter.")
@click.option("--save-steps", type=click.IntRange(1), default=50, show_default=True,
              help="Checkpoint every N steps (a killed run resumes from the newest).")
@click.option("--export", "export", default=None, help="Comma-separated: gguf,tei,onnx.")
def from_corpus_command(corpus, **options):
    """Fine-tune an embedding model on the documents in CORPUS and report retrieval before and after.

    CORPUS is a folder of .txt/.md/.html/.pdf/.jsonl files or a BEIR folder. DIR receives
    chunks.jsonl, pairs.jsonl, eval.jsonl, checkpoints/, adapter/, merged/ and report.{json,md,png}.
    Running the same command again continues where it stopped; --force starts over.
    """
    from embtune.pipeline import RunSettings, run_pipeline

    run_pipeline(settings_from_options(RunSettings, corpus, options))


def settings_from_options(cls, corpus: str, options: dict):
    """Build RunSettings from the parsed click options (``--quiet`` becomes ``show_progress=False``)."""
    quiet = options.pop("quiet", False)
    if quiet:
        from embtune.pipeline.summary import quiet_libraries

        quiet_libraries()
    export = options.pop("export", None)
    settings = cls(corpus=corpus, show_progress=not quiet, **options)
    settings.export = export or ()
    return settings
