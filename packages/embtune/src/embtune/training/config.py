"""Settings of one training run (``TrainConfig``) and what a run hands back (``TrainResult``).

``TrainConfig`` is flat on purpose: every knob is one field with its docstring under it, checked in
``__post_init__`` so a bad value fails before any work starts (ConfigError naming the field).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embtune.errors import ConfigError

SCHEDULERS = ("linear", "cosine", "constant")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ConfigError(f"TrainConfig.{name} must be {what}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'>' if low_open else '>='} {low}"
        hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high}"
        raise ConfigError(f"TrainConfig.{name} must be a finite number {lo}{hi}"
                          f"{' or None' if allow_none else ''}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything ``embtune.train`` needs besides the model, the data and the loss."""

    output_dir: str | os.PathLike
    """Run folder. Checkpoints go to ``output_dir/checkpoints/step-N``, the run summary to
    ``output_dir/trainer_state.json``. Saving the final model is the caller's job."""

    epochs: int = 1
    """Passes over the data. Ignored when ``max_steps`` is set."""

    max_steps: int | None = None
    """Total optimizer steps. Overrides ``epochs``: the data is cycled (reshuffled each pass)
    until this many steps are done."""

    batch_size: int = 32
    """Rows per micro-batch. With in-batch negatives, each anchor sees ``batch_size - 1`` other
    rows' documents as negatives, so larger is usually better. Under torchrun this is the global
    batch: each of N processes embeds about ``batch_size / N`` rows and the contrastive losses
    gather the rest, so raise it with the number of GPUs."""

    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step; the gradient is the mean over them. In-batch negatives
    stay within each micro-batch (this is not the same as a ``k`` times larger batch)."""

    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (reached at the end of warm-up)."""

    weight_decay: float = 0.01
    """AdamW decoupled weight decay, applied to matrices only (biases and norm weights get none)."""

    warmup_ratio: float = 0.1
    """Fraction of the total steps spent warming up linearly to ``learning_rate``."""

    warmup_steps: int | None = None
    """Warm-up length in steps; overrides ``warmup_ratio`` when set."""

    scheduler: str = "linear"
    """Learning-rate shape after warm-up: ``"linear"`` (to 0), ``"cosine"`` (to 0) or ``"constant"``."""

    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; None turns clipping off (the norm is still
    checked for NaN/inf)."""

    seed: int = 42
    """Seeds Python, NumPy and torch at the start of a fresh run, and fixes the batch order
    (each epoch's order is a function of seed and epoch only)."""

    eval_steps: int | None = None
    """Evaluate every N optimizer steps when ``eval_data`` is given; None: at the end of each
    epoch. The last step is always evaluated."""

    eval_split: str = "test"
    """qrels split to evaluate on when ``eval_data`` is a BEIR folder or ``BeirData``."""

    eval_batch_size: int = 64
    """Encoding batch size during evaluation."""

    save_steps: int | None = None
    """Write a checkpoint every N optimizer steps; None: at the end of each epoch. The last step
    is always saved."""

    save_total_limit: int | None = 2
    """Keep only the newest N checkpoints (older ones are deleted after each save); None keeps all."""

    logging_steps: int = 10
    """Record the mean training loss every N optimizer steps in ``loss_history``."""

    resume: bool = True
    """Continue from the newest complete checkpoint in ``output_dir`` when there is one. With
    False, an ``output_dir`` that already holds checkpoints is refused (ConfigError)."""

    show_progress: bool = True
    """Show tqdm progress bars (tokenisation and training, with loss and learning rate)."""

    gradient_checkpointing: bool = False
    """Activation checkpointing: keep one hidden state per transformer layer in the forward and
    recompute the rest during the backward (transformers' own, non-reentrant), for less memory at
    about one more forward per step. Losses and gradients are unchanged, so a run may be resumed with
    it switched either way. Switched off again when training ends. ConfigError (when training starts)
    for a model transformers cannot checkpoint, e.g. MPNet. See
    ``embtune.training.activation_checkpointing``."""

    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the loss when ``loss`` is a name or a callable."""

    matryoshka_dims: tuple[int, ...] | None = None
    """Train nested embedding sizes (Matryoshka), e.g. ``(384, 256, 128, 64)``; passed to
    ``embtune.losses.get_loss`` when ``loss`` is a name."""

    def __post_init__(self) -> None:
        """Normalise ``output_dir`` to a Path and check every field; raises ConfigError."""
        if self.output_dir is None or str(self.output_dir) == "":
            raise ConfigError("TrainConfig.output_dir is required (the folder for checkpoints)")
        self.output_dir = Path(self.output_dir)
        _check_int("epochs", self.epochs, 1)
        _check_int("max_steps", self.max_steps, 1, allow_none=True)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("warmup_ratio", self.warmup_ratio, 0.0, 1.0, high_open=True)
        _check_int("warmup_steps", self.warmup_steps, 0, allow_none=True)
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"TrainConfig.scheduler must be one of {', '.join(SCHEDULERS)}; "
                              f"got {self.scheduler!r}")
        _check_float("max_grad_norm", self.max_grad_norm, 0.0, low_open=True, allow_none=True)
        _check_int("seed", self.seed, 0)
        _check_int("eval_steps", self.eval_steps, 1, allow_none=True)
        if not isinstance(self.eval_split, str) or not self.eval_split:
            raise ConfigError(f"TrainConfig.eval_split must be a split name, got {self.eval_split!r}")
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("save_steps", self.save_steps, 1, allow_none=True)
        _check_int("save_total_limit", self.save_total_limit, 1, allow_none=True)
        _check_int("logging_steps", self.logging_steps, 1)
        for name in ("resume", "show_progress", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.loss_kwargs, dict):
            raise ConfigError("TrainConfig.loss_kwargs must be a dict, "
                              f"got {type(self.loss_kwargs).__name__}")
        if self.matryoshka_dims is not None:
            dims = tuple(self.matryoshka_dims) if isinstance(self.matryoshka_dims, (list, tuple)) else None
            if (not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims)
                    or len(set(dims)) != len(dims)):
                raise ConfigError("TrainConfig.matryoshka_dims must be distinct positive integers, "
                                  f"got {self.matryoshka_dims!r}")
            self.matryoshka_dims = dims

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (``output_dir`` as a string)."""
        out = asdict(self)
        out["output_dir"] = str(self.output_dir)
        if self.matryoshka_dims is not None:
            out["matryoshka_dims"] = list(self.matryoshka_dims)
        return out


@dataclass
class TrainResult:
    """What ``embtune.train`` returns. Steps are optimizer steps, counted from 1."""

    global_step: int
    """Optimizer steps done in total (including those done before a resume)."""

    epochs_completed: int
    """Full passes over the data finished."""

    final_loss: float | None
    """Mean training loss of the last logging window (``loss_history[-1]``); None if no step ran."""

    loss_history: list[tuple[int, float]]
    """``(step, mean loss over the steps since the previous entry)``, every ``logging_steps`` and at
    the end."""

    eval_history: list[tuple[int, dict[str, float]]]
    """``(step, metrics)`` for each evaluation, e.g. ``(100, {"ndcg@10": 0.61, ...})``."""

    seconds: float
    """Wall time of this call."""

    train_samples_per_second: float
    """Training rows processed per second in this call (0.0 when nothing was left to do)."""

    output_dir: Path
    """The run folder."""

    last_checkpoint: Path | None
    """The newest checkpoint folder (``output_dir/checkpoints/step-N``)."""

    resumed_from: Path | None = None
    """The checkpoint this call continued from, or None for a fresh run."""
