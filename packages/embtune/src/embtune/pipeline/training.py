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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError

DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class TrainSettings:
    """The training flags shared by ``embtune train`` and ``embtune from-corpus`` (each field is one
    flag; ``embtune.cli.flags`` lists the flag and the library argument it reaches)."""

    model: str | None = None
    loss: str = "infonce"
    matryoshka_dims: tuple[int, ...] | None = None
    """Train nested embedding sizes: the loss is wrapped in MatryoshkaLoss with these dims."""
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int | None = None
    """None: 2 x lora_r."""
    lora_dropout: float = 0.0
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """"all-linear" (every linear layer of the transformer body) or the layer names to adapt."""
    lora_compute: str = "bf16"
    """Arithmetic of the LoRA layers: "bf16", "exact" or "peft" (``get_peft_model(lora_compute=)``)."""
    qlora: bool = False
    full: bool = False
    seed: int = 42
    save_steps: int | None = None
    logging_steps: int = 10
    max_seq_length: int | None = None
    dtype: str = "auto"
    """dtype of the frozen base weights: auto, bf16, fp16 or fp32."""
    query_prompt: str | None = None
    """Text put before every query, as it is (e.g. "query: "); saved with the model."""
    document_prompt: str | None = None
    """Text put before every document (e.g. "passage: "); saved with the model."""
    instruction: str | None = None
    """Task instruction for queries; decoders get "Instruct: {instruction}\\nQuery: "."""
    allow_pickle: bool = False
    trust_remote_code: bool = False
    show_progress: bool = True

    def weights_folder(self) -> str:
        """Name of the folder training writes: ``adapter`` (LoRA/QLoRA) or ``model`` (--full)."""
        return "model" if self.full else "adapter"


def check_training_options(s: Any) -> None:
    """Refuse bad training options of ``s`` (TrainSettings or RunSettings: same field names) before any
    work starts; raises ConfigError naming the flag. Normalises ``loss``, ``matryoshka_dims`` and
    ``lora_target_modules`` in place."""
    from embtune.choices import LORA_COMPUTE_MODES as COMPUTE_MODES, loss_key

    if s.qlora and s.full:
        raise ConfigError("--qlora and --full exclude each other (4-bit weights cannot be trained fully)")
    try:
        s.loss = loss_key(s.loss)
    except ConfigError as exc:
        raise ConfigError(f"--loss: {exc}") from None
    if s.matryoshka_dims is not None:
        dims = tuple(s.matryoshka_dims)
        if (not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims)
                or len(set(dims)) != len(dims)):
            raise ConfigError(f"--matryoshka-dims must be distinct positive integers, got {s.matryoshka_dims!r}")
        s.matryoshka_dims = dims
    if s.lora_alpha is not None and (isinstance(s.lora_alpha, bool) or not isinstance(s.lora_alpha, int)
                                     or s.lora_alpha < 1):
        raise ConfigError(f"--lora-alpha must be an integer >= 1, got {s.lora_alpha!r}")
    if isinstance(s.lora_dropout, bool) or not isinstance(s.lora_dropout, (int, float)) \
            or not 0.0 <= s.lora_dropout < 1.0:
        raise ConfigError(f"--lora-dropout must be a number in [0, 1), got {s.lora_dropout!r}")
    targets = s.lora_target_modules
    if targets != "all-linear":
        targets = tuple(targets.split(",") if isinstance(targets, str) else targets)
        if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ConfigError(f"--lora-target-modules takes layer names separated by commas, got {targets!r}")
        s.lora_target_modules = tuple(t.strip() for t in targets)
    if s.full and (s.lora_target_modules != "all-linear" or s.lora_dropout):
        raise ConfigError("--lora-target-modules and --lora-dropout shape a LoRA adapter; --full trains every "
                          "weight instead")
    if s.lora_compute not in COMPUTE_MODES:
        raise ConfigError(f"--lora-compute must be one of {', '.join(COMPUTE_MODES)}, got {s.lora_compute!r}")
    check_load_options(s)


def check_load_options(s: Any) -> None:
    """Refuse a bad ``dtype`` or an instruction given together with a query prompt (ConfigError)."""
    if s.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {s.dtype!r}")
    if s.instruction is not None and s.query_prompt is not None:
        raise ConfigError("--instruction and --query-prompt exclude each other (the instruction becomes the "
                          "query prompt)")


def load_options(s: Any, base: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``FastSentenceTransformer.from_pretrained`` from the settings ``s``
    (TrainSettings or RunSettings). ``base=False`` (a trained folder, whose prompts are saved in it)
    leaves out the instruction and the prompts."""
    options: dict[str, Any] = {"max_seq_length": s.max_seq_length, "allow_pickle": s.allow_pickle,
                               "trust_remote_code": s.trust_remote_code,
                               "dtype": None if s.dtype == "auto" else s.dtype}
    if base:
        prompts = {"query": s.query_prompt, "document": s.document_prompt}
        options.update(instruction=s.instruction,
                       prompts={role: text for role, text in prompts.items() if text is not None} or None)
    return options


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


def load_for_training(settings: TrainSettings):
    """Load ``settings.model`` (default: the embedded MiniLM) with its dtype and prompts and make it
    trainable: a LoRA adapter (rank, alpha, dropout, target layers and compute mode of the settings;
    on a 4-bit base with ``qlora``) or every weight (``full``). Returns the model."""
    from embtune.models.names import resolve_model
    from embtune.models import FastSentenceTransformer

    check_training_options(settings)
    model = FastSentenceTransformer.from_pretrained(
        resolve_model(settings.model), load_in_4bit=settings.qlora, full_finetuning=settings.full,
        **load_options(settings))
    if not settings.full:
        targets = settings.lora_target_modules
        model = FastSentenceTransformer.get_peft_model(
            model, r=settings.lora_r, lora_alpha=settings.lora_alpha or 2 * settings.lora_r,
            lora_dropout=float(settings.lora_dropout), lora_compute=settings.lora_compute,
            target_modules=targets if isinstance(targets, str) else list(targets))
    return model


def train_model(data: Any, out_dir: str | os.PathLike, settings: TrainSettings,
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
    if run_config is not None and is_main_process():
        from embtune.pipeline.run_config import write_run_config

        write_run_config(out, run_config, "train")
    config = TrainConfig(output_dir=str(out), epochs=settings.epochs, max_steps=settings.max_steps,
                         batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
                         save_steps=settings.save_steps, logging_steps=settings.logging_steps,
                         show_progress=settings.show_progress, matryoshka_dims=settings.matryoshka_dims)
    result = train(model, rows, loss=settings.loss, config=config)
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
