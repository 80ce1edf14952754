"""Training from a from-corpus run: the one code path shared by ``embtune from-corpus`` and ``embtune train``.

``train_model`` loads the model, attaches LoRA (or QLoRA, or trains every weight), trains with
``embtune.training.train`` (checkpoints in ``out_dir/checkpoints``, resumed automatically) and saves
the adapter (``out_dir/adapter``) or the full model (``out_dir/model``) atomically. ``merge_model``
turns that folder into a plain sentence-transformers folder.

A from-corpus pairs.jsonl (``query``, ``positive``, ``negatives`` lists) becomes training rows
``anchor, positive, negative_1..k`` where k is the smallest number of negatives any pair has (every
row needs the same columns); ``load_train_data`` recognises such a file, or a run folder holding
one, and leaves any other path to ``embtune.data.as_pairs_data``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embtune.pipeline.settings import TrainSettings


def is_corpus_pairs_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a .jsonl whose first non-blank line is a from-corpus pair (has ``query``,
    ``positive`` and ``negatives``). Unreadable or malformed files return False (the loaders report them)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".jsonl", ".ndjson"):
        return False
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    first = json.loads(raw.decode("utf-8"))
                    return isinstance(first, dict) and {"query", "positive", "negatives"} <= set(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def corpus_pairs_data(path: str | os.PathLike):
    """Read a from-corpus pairs.jsonl into ``embtune.data.PairsData`` (anchor, positive, negative_1..k;
    ``embtune.data.pairs.pairs_to_training_data``). Raises DataFormatError naming the file (and line
    for a malformed record)."""
    from embtune.data.pairs import pairs_to_training_data
    from embtune.pipeline.records import read_pairs

    return pairs_to_training_data(read_pairs(path), source=str(path))


def load_train_data(data: str | os.PathLike) -> Any:
    """What ``train`` gets for a ``--data`` path: PairsData for a from-corpus pairs file or run folder
    (a folder with manifest.json and pairs.jsonl), else the path itself (BEIR folder, pairs file)."""
    path = Path(data)
    if path.is_dir() and (path / "pairs.jsonl").is_file() and (path / "manifest.json").is_file():
        path = path / "pairs.jsonl"
    if is_corpus_pairs_file(path):
        return corpus_pairs_data(path)
    return data


def load_for_training(settings: "TrainSettings"):
    """Load ``settings.model`` (default: the embedded MiniLM) with its dtype and prompts and make it
    trainable: a LoRA adapter (rank, alpha, dropout, target layers and compute mode of the settings;
    on a 4-bit base with ``qlora``) or every weight (``full``). Returns the model."""
    from embtune.models.names import resolve_model
    from embtune.models import FastSentenceTransformer

    settings.check()
    model = FastSentenceTransformer.from_pretrained(
        resolve_model(settings.model), load_in_4bit=settings.qlora, full_finetuning=settings.full,
        **settings.load_options())
    if not settings.full:
        targets = settings.lora_target_modules
        model = FastSentenceTransformer.get_peft_model(
            model, r=settings.lora_r, lora_alpha=settings.lora_alpha or 2 * settings.lora_r,
            lora_dropout=float(settings.lora_dropout), lora_compute=settings.lora_compute,
            target_modules=targets if isinstance(targets, str) else list(targets))
    return model


def train_model(data: Any, out_dir: str | os.PathLike, settings: "TrainSettings",
                run_config: dict[str, Any] | None = None):
    """Train on ``data`` and save the weights to ``out_dir/adapter`` (or ``out_dir/model`` with --full).

    In: anything ``load_train_data`` / ``embtune.train`` accepts, the run folder, the settings, and
    optionally the command's resolved options, written to ``out_dir/run_config.toml`` once the model
    has loaded (so a run that fails on its inputs leaves no folder behind).
    Checkpoints go to ``out_dir/checkpoints`` and a rerun resumes from the newest one; temporary
    folders a killed run left for the weights or the merged model are removed first. Out:
    ``(model, TrainResult, weights folder)``. Under torchrun every process trains its shard of each
    batch (see `embtune.training.distributed`) and only the main process writes the weights.
    """
    from embtune.training import train
    from embtune.training.distributed import init_distributed, is_main_process, wait_for_everyone
    from embtune.utils.atomic import remove_partial_writes

    init_distributed()  # a no-op outside torchrun; before loading, so "cuda" means this process's GPU
    out = Path(out_dir)
    if is_main_process():
        remove_partial_writes(out, (settings.weights_folder(), "merged", "trainer_state.json"))
    wait_for_everyone()
    rows = load_train_data(data) if isinstance(data, (str, os.PathLike)) else data
    model = load_for_training(settings)
    if run_config is not None and is_main_process():
        from embtune.pipeline.run_config import write_run_config

        write_run_config(out, run_config, "train")
    result = train(model, rows, loss=settings.loss, config=settings.train_config(out))
    weights = out / settings.weights_folder()
    if is_main_process():
        model.save_pretrained(str(weights))
    wait_for_everyone()
    return model, result, weights


def merge_model(weights: str | os.PathLike, merged_dir: str | os.PathLike, qlora: bool = False,
                strength: float = 1.0, checkpoint: str | os.PathLike | None = None,
                base_source: str | None = None) -> Path:
    """Load an adapter (or full model) folder and save it merged as a plain ST folder, atomically.

    With ``qlora`` the base is loaded in 4-bit first, so the merge uses exactly the dequantised nf4
    weights the adapter was trained against. ``strength`` < 1 moves the weights that far back toward
    the base (0: the base model; ``embtune.models.strength``), ``checkpoint`` takes the trainable
    weights of that training checkpoint instead of the saved ones, ``base_source`` names the base
    of a fully trained model (needed with ``strength`` < 1). Returns ``merged_dir``.
    """
    from embtune.models import FastSentenceTransformer

    if strength != 1.0 or checkpoint is not None:
        from embtune.models.strength import StrengthModel

        chosen = StrengthModel.load(weights, base_source=base_source, checkpoint=checkpoint, qlora=qlora)
        chosen.set_strength(strength)
        return chosen.save(merged_dir)
    model = FastSentenceTransformer.from_pretrained(str(weights), dtype="fp32", load_in_4bit=qlora)
    model.save_pretrained_merged(str(merged_dir))
    return Path(merged_dir)
