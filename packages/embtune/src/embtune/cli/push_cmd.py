"""``embtune push FOLDER --repo-id ORG/NAME``: upload an adapter or merged model folder to the Hub."""
from __future__ import annotations

import click


@click.command("push")
@click.argument("folder", type=click.Path())
@click.option("--repo-id", required=True, help="Hub repository ORG/NAME (created when missing).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", default=None, metavar="TOKEN",
              help="Hub access token (default: HF_TOKEN or the saved `hf auth login`); never printed.")
@click.option("--message", "commit_message", default="Upload embtune model", show_default=True,
              help="Commit message.")
def push_command(folder, repo_id, private, token, commit_message):
    """Upload FOLDER, an adapter (DIR/adapter) or a merged model (DIR/merged), to the Hub repo as it is."""
    from embtune.models.hub import folder_kind, push_folder

    kind = folder_kind(folder)
    url = push_folder(folder, repo_id, token=token, private=private or None, commit_message=commit_message)
    click.echo(f"uploaded {kind} {folder} to {url}")
