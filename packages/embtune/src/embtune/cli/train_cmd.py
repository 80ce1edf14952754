"""``embtune train --data PAIRS --out DIR``: LoRA / QLoRA / full fine-tuning from pairs or a BEIR folder."""
from __future__ import annotations

from pathlib import Path

import click

from embtune.cli.options import FiniteFloatRange, model_options


@click.command("train")
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Pairs/triplets JSONL or CSV, a BEIR folder (its train qrels), or a from-corpus run folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder: checkpoints/, adapter/, merged/.")
@model_options
@click.option("--loss", default="infonce", show_default=True,
              help="infonce | infonce_symmetric | cached_infonce | cosent | cosine_mse | triplet")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=FiniteFloatRange(0, min_open=True), default=2e-4, show_default=True)
@click.option("--lora-r", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(1), default=None, help="Default: 2 x r.")
@click.option("--qlora", is_flag=True, help="4-bit base (bitsandbytes nf4) + LoRA.")
@click.option("--full", is_flag=True, help="Train every weight instead of a LoRA adapter.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--save-steps", type=click.IntRange(1), default=None,
              help="Checkpoint every N steps (default: each epoch); a rerun resumes from the newest.")
def train_command(data_path, out_dir, model_name, max_seq_length, allow_pickle, trust_remote_code, loss,
                  epochs, max_steps, batch_size, learning_rate, lora_r, lora_alpha, qlora, full, seed, save_steps):
    """Fine-tune a model on DATA and write the adapter (or full model) and the merged model to OUT.

    DATA is a pairs/triplets JSONL/CSV/TSV file, a BEIR folder (train qrels), or a from-corpus run
    folder / its pairs.jsonl (query, positive, mined negatives). A rerun resumes from OUT/checkpoints.
    """
    from embtune.data import as_pairs_data
    from embtune.errors import ConfigError
    from embtune.losses import LOSS_NAMES
    from embtune.pipeline.training import TrainSettings, load_train_data, merge_model, train_model

    # Check the cheap inputs before the model loads, so a typo fails at once and on one line.
    if loss.strip().lower().replace("-", "_") not in LOSS_NAMES:
        raise ConfigError(f"--loss {loss!r} is not a loss; use one of {', '.join(LOSS_NAMES)}")
    data = load_train_data(data_path)
    if isinstance(data, (str, Path)):
        data = as_pairs_data(data)
    settings = TrainSettings(model=model_name, loss=loss, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                             learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha, qlora=qlora, full=full,
                             seed=seed, save_steps=save_steps, max_seq_length=max_seq_length,
                             allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    out = Path(out_dir)
    _, result, weights = train_model(data, out, settings)
    from embtune.training.distributed import is_main_process

    if not is_main_process():  # under torchrun the main process merges and reports
        return
    merge_model(weights, out / "merged", qlora=qlora)
    loss_text = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    click.echo(f"trained {result.global_step} steps, final loss {loss_text}; "
               f"merged model in {out / 'merged'}")
