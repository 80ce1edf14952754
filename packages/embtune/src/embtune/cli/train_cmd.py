"""``embtune train --data PAIRS --out DIR``: LoRA / QLoRA / full fine-tuning from pairs or a BEIR folder.

The options are the ``train`` rows of `embtune.cli.flags` (``--config FILE`` reads them from a
file); the options the run used are saved to ``DIR/run_config.toml``.
"""
from __future__ import annotations

from pathlib import Path

import click

from embtune.cli.config_file import load_config, resolved_options, settings_kwargs
from embtune.cli.flags import TRAIN, command_options


@click.command("train")
@command_options(TRAIN, on_config=load_config)
@click.pass_context
def train_command(ctx: click.Context, **options):
    """Fine-tune a model on DATA and write the adapter (or full model) and the merged model to OUT.

    DATA is a pairs/triplets JSONL/CSV/TSV file, a BEIR folder (train qrels), or a from-corpus run
    folder / its pairs.jsonl (query, positive, mined negatives). A rerun resumes from OUT/checkpoints.
    """
    from embtune.data import as_pairs_data
    from embtune.pipeline.settings import TrainSettings
    from embtune.pipeline.training import load_train_data, merge_model, train_model

    settings = TrainSettings(**{k: v for k, v in settings_kwargs(ctx).items() if k != "out"})
    settings.check()  # the cheap checks first, so a mistake fails at once, on one line
    data = load_train_data(options["data"])
    if isinstance(data, (str, Path)):
        data = as_pairs_data(data)
    out = Path(options["out"])
    _, result, weights = train_model(data, out, settings, run_config=resolved_options(ctx))
    from embtune.training.distributed import is_main_process

    if not is_main_process():  # under torchrun the main process merges and reports
        return
    merge_model(weights, out / "merged", qlora=settings.qlora)
    loss_text = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    click.echo(f"trained {result.global_step} steps, final loss {loss_text}; "
               f"merged model in {out / 'merged'}")
