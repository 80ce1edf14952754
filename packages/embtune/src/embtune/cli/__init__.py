"""The ``embtune`` command line: one click group, one module per command.

User mistakes (`embtune.errors.EmbtuneError`) print one line and exit with code 2; ``--debug``
shows the traceback instead. Commands parse options and call one library function each.
"""
from __future__ import annotations

import os

import click

from embtune import __version__
from embtune.cli.output import configure_cli_output
from embtune.errors import EmbtuneError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class EmbtuneGroup(click.Group):
    """A click group that turns EmbtuneError into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context):
        """Run the subcommand; on EmbtuneError, or a bad option of the subcommand, print one line
        ``embtune: error: …`` and exit 2 (unless --debug)."""
        try:
            return super().invoke(ctx)
        except EmbtuneError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"embtune: error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            if ctx.params.get("debug"):
                raise
            command = exc.ctx.command_path if exc.ctx is not None else "embtune"
            message = " ".join(exc.format_message().split())
            click.echo(f"embtune: error: {message} (see `{command} --help`)", err=True)
            ctx.exit(2)


@click.group(cls=EmbtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="embtune")
@click.option("--debug", is_flag=True,
              help="Show full tracebacks and every library's warnings, logs and progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log what embtune decides (dtype, pooling, targets).")
def main(debug: bool, verbose: bool) -> None:
    """Fine-tune an embedding model on your documents and prove retrieval got better."""
    configure_cli_output(debug=debug, verbose=verbose)


def _register() -> None:
    from embtune.cli.eval_cmd import eval_command
    from embtune.cli.export_cmd import export_command
    from embtune.cli.flags import flags_command
    from embtune.cli.from_corpus_cmd import from_corpus_command
    from embtune.cli.label_cmd import label_command
    from embtune.cli.merge_cmd import merge_command
    from embtune.cli.pairs_cmd import pairs_command
    from embtune.cli.push_cmd import push_command
    from embtune.cli.train_cmd import train_command
    from embtune.cli.train_reranker_cmd import train_reranker_command

    main.add_command(from_corpus_command)
    main.add_command(pairs_command)
    main.add_command(train_command)
    main.add_command(train_reranker_command)
    main.add_command(eval_command)
    main.add_command(label_command)
    main.add_command(merge_command)
    main.add_command(export_command)
    main.add_command(push_command)
    main.add_command(flags_command)


_register()
