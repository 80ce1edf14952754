"""``embtune merge ADAPTER --out DIR``: fold a LoRA adapter into its base, as a plain ST folder."""
from __future__ import annotations

import click


@click.command("merge")
@click.argument("adapter", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder for the merged model.")
def merge_command(adapter, out_dir):
    """Merge the adapter folder ADAPTER into its base model and save a plain sentence-transformers folder."""
    from embtune.models import FastSentenceTransformer

    model = FastSentenceTransformer.from_pretrained(adapter, dtype="fp32")
    model.save_pretrained_merged(out_dir)
    click.echo(f"merged model written to {out_dir}")
