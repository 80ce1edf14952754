"""``embtune train-reranker --data PAIRS --out DIR``: a cross-encoder reranker from the embedder's pairs.

The data are what ``embtune train`` reads (a from-corpus run folder or its pairs.jsonl with mined
negatives, a pairs/triplets file, a BEIR folder's train qrels). The reranker is an ST CrossEncoder
(`embtune.rerankers`): ``--model`` an encoder or embedder gets a fresh one-logit head, a saved
reranker (bge-reranker, ms-marco-MiniLM) keeps its own, a decoder is scored Qwen3-Reranker style.
It trains in ``embtune.train``'s loop (checkpoints in OUT/checkpoints; a rerun resumes) and is
saved merged to OUT/reranker, a folder ST's ``CrossEncoder`` loads.
"""
from __future__ import annotations

from pathlib import Path

import click

from embtune.errors import ConfigError


@click.command("train-reranker")
@click.option("--data", required=True, type=click.Path(), help="Pairs: from-corpus run folder, pairs file or BEIR folder.")
@click.option("--out", required=True, type=click.Path(), help="Run folder (checkpoints, reranker/).")
@click.option("--model", default=None, help="Base: encoder/embedder (fresh head), reranker, or decoder "
              "(default: the embedded all-MiniLM-L6-v2 with a fresh head).")
@click.option("--loss", type=click.Choice(["listwise", "bce"]), default="listwise", show_default=True,
              help="listwise: softmax over the positive and negatives; bce: binary cross-entropy per pair.")
@click.option("--qlora", is_flag=True, help="4-bit base (bitsandbytes nf4) + LoRA.")
@click.option("--full", is_flag=True, help="Train every weight instead of a LoRA adapter.")
@click.option("--lora-r", type=click.IntRange(1), default=16, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (default: 2e-4 with LoRA, 3e-5 with --full).")
@click.option("--max-length", type=click.IntRange(8), default=256, show_default=True,
              help="Tokens per (query, document) input.")
@click.option("--instruction", default=None, help="Decoder rerankers: the <Instruct> text.")
@click.option("--save-steps", type=click.IntRange(1), default=None, help="Checkpoint every N steps.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_reranker_command(data, out, model, loss, qlora, full, lora_r, epochs, batch_size, learning_rate,
                           max_length, instruction, save_steps, seed, quiet):
    """Train a reranker on DATA and write it, merged, to OUT/reranker."""
    from embtune.pipeline.training import load_train_data
    from embtune.rerankers.training import train_reranker

    if qlora and full:
        raise ConfigError("--qlora and --full exclude each other (4-bit weights cannot be trained fully)")
    rows = load_train_data(data)
    if isinstance(rows, (str, Path)):
        from embtune.data import as_pairs_data

        rows = as_pairs_data(rows)  # a bad file fails here, before the model loads
    _, result, folder = train_reranker(rows, out, base=model, loss=loss, qlora=qlora, full=full, lora_r=lora_r,
                                       learning_rate=learning_rate, max_length=max_length, instruction=instruction,
                                       epochs=epochs, batch_size=batch_size, seed=seed, save_steps=save_steps,
                                       show_progress=not quiet)
    loss_text = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    click.echo(f"trained {result.global_step} steps, final loss {loss_text}; reranker in {folder}")
