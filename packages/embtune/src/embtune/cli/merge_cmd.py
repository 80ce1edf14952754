"""``embtune merge``: fold a LoRA adapter into its base, or SLERP two models; writes a plain ST folder.

    embtune merge ADAPTER --out DIR              # adapter + base -> one model
    embtune merge --slerp A B --t 0.5 --out DIR  # spherical interpolation of every weight tensor
"""
from __future__ import annotations

import click

from embtune.cli.options import FiniteFloatRange


@click.command("merge")
@click.argument("adapter", type=click.Path(), required=False)
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder for the merged model.")
@click.option("--slerp", nargs=2, type=click.Path(), default=None, metavar="A B",
              help="Merge two models/adapters of the same architecture by spherical interpolation.")
@click.option("--t", "t", type=FiniteFloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="SLERP position: 0 gives A, 1 gives B.")
def merge_command(adapter, out_dir, slerp, t):
    """Merge the adapter folder ADAPTER into its base model (or SLERP two models) and save a plain
    sentence-transformers folder to OUT."""
    from pathlib import Path

    from embtune.errors import ConfigError, ModelLoadError

    if slerp and adapter:
        raise ConfigError("give either ADAPTER or --slerp A B, not both")
    if not slerp and not adapter:
        raise ConfigError("give the ADAPTER folder to merge, or --slerp A B")
    for path in (*(slerp or ()), *([adapter] if adapter else [])):
        if not Path(path).exists():  # before the heavy imports: a typo fails in a blink
            raise ModelLoadError("model folder does not exist", path=path)
    if slerp:
        from embtune.models.slerp import slerp_models

        slerp_models(slerp[0], slerp[1], t, out_dir)
        click.echo(f"SLERP of {slerp[0]} and {slerp[1]} at t={t} written to {out_dir}")
        return
    from embtune.models import FastSentenceTransformer

    model = FastSentenceTransformer.from_pretrained(adapter, dtype="fp32")
    model.save_pretrained_merged(out_dir)
    click.echo(f"merged model written to {out_dir}")
