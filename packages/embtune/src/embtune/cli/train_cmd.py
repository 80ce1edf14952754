"""``embtune train --data PAIRS --out DIR``: LoRA / QLoRA / full fine-tuning from pairs or a BEIR folder."""
from __future__ import annotations

from pathlib import Path

import click

from embtune.cli.options import model_options, resolve_model


@click.command("train")
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Pairs/triplets JSONL or CSV, or a BEIR folder (its train qrels).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run folder: checkpoints/, adapter/, merged/.")
@model_options
@click.option("--loss", default="infonce", show_default=True,
              help="infonce | infonce_symmetric | cached_infonce | cosent | cosine_mse | triplet")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), default=2e-4, show_default=True)
@click.option("--lora-r", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(1), default=None, help="Default: 2 x r.")
@click.option("--qlora", is_flag=True, help="4-bit base (bitsandbytes nf4) + LoRA.")
@click.option("--full", is_flag=True, help="Train every weight instead of a LoRA adapter.")
@click.option("--seed", type=int, default=42, show_default=True)
def train_command(data_path, out_dir, model_name, max_seq_length, allow_pickle, trust_remote_code, loss,
                  epochs, max_steps, batch_size, learning_rate, lora_r, lora_alpha, qlora, full, seed):
    """Fine-tune a model on DATA and write the adapter (or full model) and the merged model to OUT."""
    from embtune.errors import ConfigError
    from embtune.models import FastSentenceTransformer
    from embtune.training import TrainConfig, train

    if qlora and full:
        raise ConfigError("--qlora and --full exclude each other")
    out = Path(out_dir)
    model = FastSentenceTransformer.from_pretrained(
        resolve_model(model_name), max_seq_length=max_seq_length, load_in_4bit=qlora, full_finetuning=full,
        allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if not full:
        model = FastSentenceTransformer.get_peft_model(model, r=lora_r, lora_alpha=lora_alpha or 2 * lora_r)
    config = TrainConfig(output_dir=str(out), epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                         learning_rate=learning_rate, seed=seed)
    result = train(model, data_path, loss=loss, config=config)
    model.save_pretrained(out / ("model" if full else "adapter"))
    model.save_pretrained_merged(out / "merged")
    click.echo(f"trained {result.global_step} steps, final loss {result.final_loss:.4f}; "
               f"merged model in {out / 'merged'}")
