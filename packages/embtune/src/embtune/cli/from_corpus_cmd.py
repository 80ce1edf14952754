"""``embtune from-corpus CORPUS --out DIR``: documents in, a fine-tuned and evaluated model out.

The options are the ``from-corpus`` rows of `embtune.cli.flags` (``--config FILE`` reads them from
a file); the options the run used are saved to ``DIR/run_config.toml``.
"""
from __future__ import annotations

import click

from embtune.cli.config_file import load_config, resolved_options, settings_kwargs
from embtune.cli.flags import CORPUS, command_options


@click.command("from-corpus")
@command_options(CORPUS, on_config=load_config)
@click.pass_context
def from_corpus_command(ctx: click.Context, **options):
    """Fine-tune an embedding model on the documents in CORPUS and report retrieval before and after.

    CORPUS is a folder of .txt/.md/.html/.pdf/.jsonl files or a BEIR folder. DIR receives
    chunks.jsonl, pairs.jsonl, eval.jsonl, checkpoints/, adapter/, merged/ and report.{json,md,png}.
    Running the same command again continues where it stopped; --force starts over.
    """
    from embtune.pipeline import run_pipeline

    run_pipeline(run_settings(ctx), run_config=resolved_options(ctx))


def run_settings(ctx: click.Context):
    """RunSettings from the parsed options of ``ctx`` (``--quiet`` also quiets the libraries' bars)."""
    from embtune.pipeline import RunSettings

    options = settings_kwargs(ctx)
    if not options["show_progress"]:
        from embtune.pipeline.console import quiet_libraries

        quiet_libraries()
    settings = RunSettings(**options)
    settings.export = ctx.params.get("export") or ()
    return settings
