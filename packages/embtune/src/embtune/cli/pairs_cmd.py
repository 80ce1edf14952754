"""``embtune pairs CORPUS --out DIR``: the data stages of from-corpus alone (chunks, pairs, negatives, split)."""
from __future__ import annotations

import click

from embtune.cli.from_corpus_cmd import data_options, settings_from_options


@click.command("pairs")
@click.argument("corpus", type=click.Path())
@data_options
def pairs_command(corpus, **options):
    """Build training pairs from the documents in CORPUS into DIR.

    Writes chunks.jsonl, pairs.jsonl (with mined hard negatives) and eval.jsonl (held-out queries),
    the same files and code as `embtune from-corpus`. Train on them with
    `embtune train --data DIR --out DIR`.
    """
    from embtune.pipeline import RunSettings, run_pipeline

    run_pipeline(settings_from_options(RunSettings, corpus, options), until="pairs", command="pairs")
