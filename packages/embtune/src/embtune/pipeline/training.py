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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError

logger = logging.getLogger("embtune")


@dataclass
class TrainSettings:
    """The training flags shared by ``embtune train`` and ``embtune from-corpus``."""

    model: str | None = None
    loss: str = "infonce"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int | None = None
    qlora: bool = False
    full: bool = False
    seed: int = 42
    save_steps: int | None = None
    logging_steps: int = 10
    max_seq_length: int | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    show_progress: bool = True

    def weights_folder(self) -> str:
        """Name of the folder training writes: ``adapter`` (LoRA/QLoRA) or ``model`` (--full)."""
        return "model" if self.full else "adapter"


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
    """Read a from-corpus pairs.jsonl into ``embtune.data.PairsData`` (anchor, positive, negative_1..k).

    k is the smallest number of negatives over all pairs (0 gives plain pairs). Raises
    DataFormatError naming the file and line for a malformed record.
    """
    from embtune.data import PairsData
    from embtune.pipeline.records import read_pairs

    pairs = read_pairs(path)
    k = min(len(p["negatives"]) for p in pairs)
    most = max(len(p["negatives"]) for p in pairs)
    if k < most:
        logger.warning("%s: pairs have %d to %d negatives; training uses the first %d of each", path, k, most, k)
    columns = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, k + 1)]
    rows = []
    for p in pairs:
        row = {"anchor": p["query"], "positive": p["positive"]}
        row.update({f"negative_{i + 1}": p["negatives"][i] for i in range(k)})
        rows.append(row)
    return PairsData(columns=columns, rows=rows, kind="triplets" if k else "pairs", source=str(path))


def load_train_data(data: str | os.PathLike) -> Any:
    """What ``train`` gets for a ``--data`` path: PairsData for a from-corpus pairs file or run folder
    (a folder with manifest.json and pairs.jsonl), else the path itself (BEIR folder, pairs file)."""
    path = Path(data)
    if path.is_dir() and (path / "pairs.jsonl").is_file() and (path / "manifest.json").is_file():
        path = path / "pairs.jsonl"
    if is_corpus_pairs_file(path):
        return corpus_pairs_data(path)
    return data


def load_for_training(settings: TrainSettings):
    """Load ``settings.model`` (default: the embedded MiniLM) and make it trainable: a LoRA adapter of
    rank ``lora_r`` (on a 4-bit base with ``qlora``) or every weight (``full``). Returns the model."""
    from embtune.cli.options import resolve_model
    from embtune.models import FastSentenceTransformer

    if settings.qlora and settings.full:
        raise ConfigError("--qlora and --full exclude each other")
    model = FastSentenceTransformer.from_pretrained(
        resolve_model(settings.model), max_seq_length=settings.max_seq_length, load_in_4bit=settings.qlora,
        full_finetuning=settings.full, allow_pickle=settings.allow_pickle,
        trust_remote_code=settings.trust_remote_code)
    if not settings.full:
        model = FastSentenceTransformer.get_peft_model(model, r=settings.lora_r,
                                                       lora_alpha=settings.lora_alpha or 2 * settings.lora_r)
    return model


def train_model(data: Any, out_dir: str | os.PathLike, settings: TrainSettings):
    """Train on ``data`` and save the weights to ``out_dir/adapter`` (or ``out_dir/model`` with --full).

    In: anything ``load_train_data`` / ``embtune.train`` accepts, the run folder, the settings.
    Checkpoints go to ``out_dir/checkpoints`` and a rerun resumes from the newest one; temporary
    folders a killed run left for the weights or the merged model are removed first. Out:
    ``(model, TrainResult, weights folder)``. Under torchrun every process trains its shard of each
    batch (see `embtune.training.distributed`) and only the main process writes the weights.
    """
    from embtune.training import TrainConfig, train
    from embtune.training.distributed import init_distributed, is_main_process, wait_for_everyone
    from embtune.utils.atomic import remove_partial_writes

    init_distributed()  # a no-op outside torchrun; before loading, so "cuda" means this process's GPU
    out = Path(out_dir)
    if is_main_process():
        remove_partial_writes(out, (settings.weights_folder(), "merged", "trainer_state.json"))
    wait_for_everyone()
    rows = load_train_data(data) if isinstance(data, (str, os.PathLike)) else data
    model = load_for_training(settings)
    config = TrainConfig(output_dir=str(out), epochs=settings.epochs, max_steps=settings.max_steps,
                         batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
                         save_steps=settings.save_steps, logging_steps=settings.logging_steps,
                         show_progress=settings.show_progress)
    result = train(model, rows, loss=settings.loss, config=config)
    weights = out / settings.weights_folder()
    if is_main_process():
        model.save_pretrained(str(weights))
    wait_for_everyone()
    return model, result, weights


def merge_model(weights: str | os.PathLike, merged_dir: str | os.PathLike, qlora: bool = False) -> Path:
    """Load an adapter (or full model) folder and save it merged as a plain ST folder, atomically.

    With ``qlora`` the base is loaded in 4-bit first, so the merge uses exactly the dequantised nf4
    weights the adapter was trained against. Returns ``merged_dir``.
    """
    from embtune.models import FastSentenceTransformer

    model = FastSentenceTransformer.from_pretrained(str(weights), dtype="fp32", load_in_4bit=qlora)
    model.save_pretrained_merged(str(merged_dir))
    return Path(merged_dir)
