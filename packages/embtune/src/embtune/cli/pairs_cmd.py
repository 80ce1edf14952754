"""``embtune pairs CORPUS --out DIR``: the data stages of from-corpus alone (chunks, pairs, negatives, split)."""
from __future__ import annotations

import click

from embtune.cli.config_file import load_config, resolved_options
from embtune.cli.flags import PAIRS, command_options
from embtune.cli.from_corpus_cmd import run_settings


@click.command("pairs")
@command_options(PAIRS, on_config=load_config)
@click.pass_context
def pairs_command(ctx: click.Context, **options):
    """Build training pairs from the documents in CORPUS into DIR.

    Writes chunks.jsonl, pairs.jsonl (with mined hard negatives) and eval.jsonl (held-out queries),
    the same files and code as `embtune from-corpus`. Train on them with
    `embtune train --data DIR --out DIR`.
    """
    from embtune.pipeline import run_pipeline

    run_pipeline(run_settings(ctx), until="pairs", command="pairs", run_config=resolved_options(ctx))
