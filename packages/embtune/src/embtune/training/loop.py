"""``embtune.training``: the one-call training path (``embtune.train``).

Decision: a lean loop of our own, not sentence-transformers' ``SentenceTransformerTrainer``. It
tokenises once, builds no-duplicate batches, calls the loss, steps AdamW on the trainable
parameters only, and owns exact checkpoint/resume. The reasons:

1. Exact resume, without pickle. The Hugging Face Trainer under ST saves optimizer, scheduler and
   RNG state with ``torch.save`` (pickle: loading it from a run folder can execute code) and
   resumes by replaying its sampler, which is exact only in some set-ups. Here a checkpoint is
   safetensors + JSON, carries a fingerprint so a checkpoint of another model, loss, data or setting
   is refused with the reason, and the resumed run equals the uninterrupted one bit for bit (tested),
   which we can promise only for a loop whose every piece of state we own.
2. Tokenise once. ST's collator tokenises every batch of every epoch; we run each distinct text
   through ``model.preprocess`` once and re-pad cached token ids per batch (same features).
3. Batches are a pure function of (data, batch size, seed, epoch): no duplicate text inside a
   batch (a duplicate is a false negative for in-batch-negative losses), and an epoch's plan can be
   recomputed on resume instead of replayed.
4. A small surface: ~100 TrainingArguments, accelerate plumbing, callbacks and auto-detected
   logging integrations are not needed by the one-call path, and each is a place where
   transformers/ST upgrades break things.

Our models are plain ``SentenceTransformer`` objects and our losses are ST-style modules, so ST's own
``SentenceTransformerTrainer`` still works on them for users who want its extras (multi-GPU,
DeepSpeed, callbacks, experiment trackers).

One step: set the scheduled learning rate; for each of the ``gradient_accumulation_steps``
micro-batches, forward the loss and backward ``loss / n`` (the gradient is the mean over the
micro-batches; in-batch negatives stay within a micro-batch); check the loss and gradient norm are
finite (else TrainingError naming the step, the last good checkpoint untouched); clip; AdamW step.
Then log, evaluate and checkpoint when due, in that order, so a checkpoint holds the history up to
and including its own step. With ``TrainConfig.gradient_checkpointing`` the transformer layers are
checkpointed for the duration of the loop (``embtune.training.activation_checkpointing``).

Under torchrun / ``accelerate launch`` (``WORLD_SIZE > 1``) every process runs this loop on its
shard of each global batch, gradients are averaged across processes before clipping, and only
process 0 writes; see ``embtune.training.distributed``.
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from embtune.errors import ConfigError, TrainingError
from embtune.losses.gather import count_gathers, local_negatives
from embtune.rerankers.loading import is_reranker
from embtune.training.activation_checkpointing import activation_checkpointing, checkpointable_models
from embtune.training.batching import BatchPlanner, intern_rows, steps_in_epoch
from embtune.training.checkpoint import (
    Progress,
    check_fingerprint,
    checkpoints_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_state,
    remove_partial_checkpoints,
    rng_processes,
    rng_state,
    save_checkpoint,
    write_trainer_state,
)
from embtune.training.config import TrainConfig, TrainResult
from embtune.training.distributed import DataParallel
from embtune.training.features import DOCUMENT, QUERY, FeatureCache, role_prompt
from embtune.training.inputs import (
    TrainingRows,
    build_optimizer,
    check_labels,
    load_rows,
    model_identity,
    resolve_eval,
    resolve_loss,
    trainable_parameters,
)
from embtune.training.schedule import Schedule, warmup_steps_for

logger = logging.getLogger(__name__)

MicroBatch = tuple[list[dict[str, Any]], "torch.Tensor | None"]
"""``(features per column, labels or None)``; in a multi-process run ``(features, labels, weight,
gather)`` with this process's loss weight and whether the loss may gather across processes."""


def train(model: nn.Module, data: Any, loss: Any = "infonce", config: TrainConfig | None = None,
          eval_data: Any = None) -> TrainResult:
    """Fine-tune ``model`` in place on ``data`` and return a TrainResult.

    In:
      ``model``: a SentenceTransformer (LoRA adapter attached, or fully trainable), or a reranker (an
      ST ``CrossEncoder`` from ``embtune.rerankers.load_reranker``); only parameters with
      ``requires_grad`` are trained.
      ``data``: anything ``embtune.data.as_pairs_data`` accepts (path, BEIR folder, BeirData,
      datasets.Dataset, list of tuples/dicts). First text column = anchor (query prompt), the others
      documents (document prompt); a ``label`` column is passed to the loss.
      ``loss``: a name for ``embtune.losses.get_loss`` ("infonce", "cosent", ...), an nn.Module built
      on ``model``, or a callable ``f(model, **config.loss_kwargs)`` returning one. For a reranker:
      "listwise" (the default) or "bce" (`embtune.rerankers.losses`, ST's cross-encoder losses); a
      pointwise loss gets the rows expanded to labelled pairs (`embtune.rerankers.data`). A reranker's
      micro-batches are the text columns themselves (ST's cross-encoder losses tokenise the pairs).
      ``config``: TrainConfig (``output_dir`` required).
      ``eval_data``: optional; see ``embtune.training.inputs.resolve_eval``; evaluated every
      ``config.eval_steps`` (or each epoch) and at the last step.
    Out: TrainResult. The model is left in eval mode with the trained weights; save it yourself
    (``model.save_pretrained``). Only checkpoints and ``trainer_state.json`` are written.
    Under torchrun (``WORLD_SIZE > 1``) call it in every process: ``config.batch_size`` is the global
    batch, each process trains on its shard, only process 0 writes, and every process returns the
    same result with the same weights (see ``embtune.training.distributed``).
    Raises ConfigError / DataFormatError for bad arguments, TrainingError for a non-finite loss or
    gradient (naming the step) or a checkpoint that belongs to another run.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError("train() needs config=TrainConfig(output_dir=...)")
    if is_reranker(model):
        from embtune.rerankers.data import reranker_training_data
        from embtune.rerankers.losses import is_pointwise

        if loss == "infonce":
            loss = "listwise"
        data = reranker_training_data(data, is_pointwise(loss))
    rows = load_rows(data)
    loss_fn, loss_name = resolve_loss(loss, model, config)
    check_labels(loss_fn, loss_name, rows)
    evaluate = resolve_eval(eval_data, config)
    return _Run(model, rows, loss_fn, loss_name, config, evaluate).execute()


def accumulate_gradients(loss_fn: nn.Module, micro_batches: Iterable[MicroBatch], count: int,
                         parallel: DataParallel | None = None) -> float:
    """Forward and backward ``count`` micro-batches, adding the mean of their gradients to ``.grad``.

    In: the loss module, ``(features per column, labels or None)`` pairs and their number; with
    ``parallel`` (a multi-process run) ``(features, labels, weight, gather)`` shards: the loss is
    computed without cross-process gathering unless ``gather``; a loss that did not gather (its value
    is a local mean) is multiplied by ``weight``, one that did already returned its scaled share
    (``embtune.losses.gather``); the values are summed over processes. Out: the mean loss (of the
    global batches when parallel, the same on every process). Raises TrainingError (naming the
    micro-batch) on a non-finite loss, before its backward (on every process at once when parallel).
    """
    total = 0.0
    for index, batch in enumerate(micro_batches):
        features, labels = batch[0], batch[1]
        if parallel is None:
            value = loss_fn(features, labels)
            scalar = float(value.detach())
        else:
            weight, gather = batch[2], batch[3]
            with count_gathers() as gathers, nullcontext() if gather else local_negatives():
                value = loss_fn(features, labels)
            if not gathers.count:
                value = value * weight
            scalar = parallel.sum(float(value.detach())) / parallel.world_size
        if not math.isfinite(scalar):
            raise TrainingError(f"the loss is {scalar} in micro-batch {index + 1} of {count}")
        (value / count).backward()
        total += scalar
    return total / count


def total_steps(planner: BatchPlanner, config: TrainConfig) -> int:
    """Optimizer steps of the whole run: ``max_steps``, or the sum over ``epochs`` of each epoch's steps."""
    if config.max_steps is not None:
        return config.max_steps
    accumulation = config.gradient_accumulation_steps
    return sum(steps_in_epoch(planner.num_batches(epoch), accumulation) for epoch in range(config.epochs))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    """One call of ``train``: the state of a run and the steps that advance it."""

    def __init__(self, model: nn.Module, rows: TrainingRows, loss_fn: nn.Module, loss_name: str,
                 config: TrainConfig, evaluate):
        self.model, self.rows, self.loss_fn = model, rows, loss_fn
        self.config, self.evaluate = config, evaluate
        self.parallel = DataParallel.detect()
        self.is_main = self.parallel is None or self.parallel.is_main
        if self.parallel is not None:
            self._place_on_own_device()
        self.params = trainable_parameters(model, loss_fn)
        if config.gradient_checkpointing:
            checkpointable_models(model)  # an unsupported model fails here, before any work
        self.texts, self.row_ids = intern_rows(rows.text_rows)
        self.roles = [QUERY] + [DOCUMENT] * (len(rows.text_columns) - 1)
        self.text_inputs = is_reranker(model)  # a cross-encoder loss takes the texts and tokenises the pairs
        self.planner = BatchPlanner(self.row_ids, config.batch_size, config.seed)
        self.total = total_steps(self.planner, config)
        warmup = warmup_steps_for(self.total, config.warmup_ratio, config.warmup_steps)
        self.schedule = Schedule(config.learning_rate, self.total, warmup, config.scheduler)
        self.optimizer = build_optimizer(self.params, config)
        self.fingerprint = self._fingerprint(loss_name)
        self.device = getattr(model, "device", None) or next(iter(self.params.values())).device
        self.progress = Progress()
        self.cache: FeatureCache | None = None
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None

    def _fingerprint(self, loss_name: str) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it. Settings that do not change
        the numbers (gradient_checkpointing, progress bars, evaluation, saving) are left out."""
        config, rows = self.config, self.rows
        return {
            "model": model_identity(self.model),
            "trainable": {n: [list(p.shape), str(p.dtype).removeprefix("torch.")]
                          for n, p in self.params.items()},
            "loss": loss_name, "loss_kwargs": config.loss_kwargs, "matryoshka_dims": config.matryoshka_dims,
            "columns": rows.text_columns + (["label"] if rows.labels is not None else []),
            "data": rows.digest,
            "prompts": {role: role_prompt(self.model, role) for role in (QUERY, DOCUMENT)},
            "max_seq_length": getattr(self.model, "max_seq_length", None),
            "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm, "seed": config.seed,
            "learning_rate": self.schedule.peak_lr, "scheduler": self.schedule.kind,
            "warmup_steps": self.schedule.warmup_steps, "total_steps": self.schedule.total_steps,
        }

    def _place_on_own_device(self) -> None:
        """Under CUDA, move the model (and the loss) to this process's GPU, ``cuda:LOCAL_RANK``."""
        current = getattr(self.model, "device", None) or next(self.model.parameters()).device
        target = self.parallel.training_device(torch.device(current))
        if torch.device(current) != target:
            logger.info("process %d: moving the model from %s to %s", self.parallel.rank, current, target)
            self.model.to(target)
            self.loss_fn.to(target)
            torch.cuda.empty_cache()

    # -- set-up ---------------------------------------------------------------------------------

    def _restore_or_start(self) -> None:
        """Resume from the newest checkpoint (after checking it belongs to this run) or seed a fresh run.

        With several processes, process 0 picks the checkpoint and every process loads it (its own
        RNG state included); then all take process 0's trainable weights, so they start identical.
        """
        out = self.config.output_dir
        latest = None
        if self.is_main:
            remove_partial_checkpoints(out)
            latest = latest_checkpoint(out)
        if self.parallel is not None:
            latest = self.parallel.broadcast_object(latest)
        state = None
        if latest is not None:
            if not self.config.resume:
                names = ", ".join(p.name for _, p in list_checkpoints(out))
                raise ConfigError(f"already holds checkpoints ({names}) of an earlier run; pass resume=True "
                                  "to continue it, or delete them / choose another output_dir to start "
                                  "afresh", path=latest.parent)
            state = read_state(latest)
            check_fingerprint(latest, state, self.fingerprint)
        if not self.text_inputs and (state is None or state["progress"]["global_step"] < self.total):
            ids_by_role: dict[str, set[int]] = {}
            for ids in self.row_ids:
                for role, tid in zip(self.roles, ids):
                    ids_by_role.setdefault(role, set()).add(tid)
            self.cache = FeatureCache(self.model, self.texts, {r: sorted(i) for r, i in ids_by_role.items()},
                                      show_progress=self.config.show_progress and self.is_main)
        rank = 0 if self.parallel is None else self.parallel.rank
        if state is None:
            seed_everything(self.config.seed + rank)
        else:
            self.progress = load_checkpoint(latest, self.params, self.optimizer, state, rank=rank)
            self.last_checkpoint = self.resumed_from = latest
            if rank >= rng_processes(state):
                logger.warning("process %d: %s holds no random state for it (written by fewer processes); "
                               "dropout draws restart from a fresh seed", rank, latest)
                seed_everything(self.config.seed + rank + 1_000_003 * self.progress.global_step)
            if self.is_main:
                logger.info("resumed from %s (step %d of %d)", latest, self.progress.global_step, self.total)
        if self.parallel is not None:
            self.parallel.broadcast_parameters(list(self.params.values()))

    # -- the loop -------------------------------------------------------------------------------

    def execute(self) -> TrainResult:
        """Run (or finish) the training; returns the TrainResult."""
        started = time.perf_counter()
        samples, loop_seconds = 0, 0.0
        try:
            self._restore_or_start()
            if self.progress.global_step < self.total:
                loop_started = time.perf_counter()
                try:
                    with activation_checkpointing(self.model, self.config.gradient_checkpointing):
                        samples = self._loop()
                except TrainingError as err:
                    self._write_summary("failed", error=str(err))
                    raise
                except BaseException as err:  # Ctrl-C, a crash in user code: say so, then let it through
                    self._write_summary("interrupted", error=f"{type(err).__name__}: {err}")
                    raise
                loop_seconds = time.perf_counter() - loop_started
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.model.eval()
        p = self.progress
        self._write_summary("finished")
        if self.parallel is not None:
            self.parallel.barrier()  # the summary is on disk before any process returns
        return TrainResult(
            global_step=p.global_step, epochs_completed=p.epoch,
            final_loss=p.loss_history[-1][1] if p.loss_history else None,
            loss_history=list(p.loss_history), eval_history=list(p.eval_history),
            seconds=time.perf_counter() - started,
            train_samples_per_second=samples / loop_seconds if loop_seconds > 0 else 0.0,
            output_dir=self.config.output_dir, last_checkpoint=self.last_checkpoint,
            resumed_from=self.resumed_from)

    def _loop(self) -> int:
        p, accumulation = self.progress, self.config.gradient_accumulation_steps
        samples = 0
        self.loss_fn.train()
        with tqdm(total=self.total, initial=p.global_step, desc="train", unit="step",
                  disable=not (self.config.show_progress and self.is_main)) as bar:
            while p.global_step < self.total:
                batches = self.planner.batches(p.epoch)
                for start in range(p.batch_in_epoch, len(batches), accumulation):
                    group = batches[start:start + accumulation]
                    lr = self.schedule.lr(p.global_step)
                    step_loss = self._step(group, lr)
                    samples += sum(len(rows) for rows in group)
                    p.global_step += 1
                    p.batch_in_epoch = start + len(group)
                    epoch_done = p.batch_in_epoch == len(batches)
                    if epoch_done:
                        p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    bar.update(1)
                    self._after_step(step_loss, epoch_done)
                    if p.global_step >= self.total:
                        break
        return samples

    def _micro_batches(self, group: list[list[int]]) -> Iterator[MicroBatch]:
        for rows in group:
            if self.parallel is not None:
                rows, weight, gather = self.parallel.shard(rows)
            features = []
            for column, role in enumerate(self.roles):
                if self.text_inputs:
                    features.append([self.texts[self.row_ids[r][column]] for r in rows])
                    continue
                batch = self.cache.collate(role, [self.row_ids[r][column] for r in rows])
                features.append({k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                                 for k, v in batch.items()})
            labels = None
            if self.rows.labels is not None:
                labels = torch.tensor([self.rows.labels[r] for r in rows], device=self.device)
            yield (features, labels) if self.parallel is None else (features, labels, weight, gather)

    def _step(self, group: list[list[int]], lr: float) -> float:
        step = self.progress.global_step + 1
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        try:
            step_loss = accumulate_gradients(self.loss_fn, self._micro_batches(group), len(group),
                                             self.parallel)
        except TrainingError as err:
            raise self._stopped(step, err.reason) from None
        params = list(self.params.values())
        if self.parallel is not None:
            self.parallel.average_gradients(params)
        if self.config.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
        if not torch.isfinite(norm):
            raise self._stopped(step, f"the gradient norm is {float(norm)} (loss {step_loss:.6g})")
        self.optimizer.step()
        return step_loss

    def _stopped(self, step: int, reason: str) -> TrainingError:
        last = self.last_checkpoint or "none yet"
        return TrainingError(f"training stopped at step {step}: {reason}. The last good checkpoint is "
                             f"{last}. Try a lower learning_rate, check the data, or keep max_grad_norm on.")

    def _after_step(self, step_loss: float, epoch_done: bool) -> None:
        p, config = self.progress, self.config
        step, final = p.global_step, p.global_step == self.total
        p.window_loss_sum += step_loss
        p.window_steps += 1
        if step % config.logging_steps == 0 or final:
            mean = p.window_loss_sum / p.window_steps
            p.loss_history.append((step, mean))
            p.window_loss_sum, p.window_steps = 0.0, 0
            if self.is_main:
                logger.info("step %d/%d loss %.4f lr %.2e", step, self.total, mean,
                            self.schedule.lr(step - 1))
        if self.evaluate is not None and (final or _due(step, config.eval_steps, epoch_done)):
            self.model.eval()  # no dropout while scoring, whatever the evaluator does
            metrics = None
            if self.is_main:  # alone: a loss used by the evaluator must not wait for the others
                with torch.no_grad(), local_negatives():
                    metrics = self.evaluate(self.model)
                logger.info("step %d eval %s", step, metrics)
            if self.parallel is not None:
                metrics = self.parallel.broadcast_object(metrics)
            self.loss_fn.train()
            p.eval_history.append((step, metrics))
        if final or _due(step, config.save_steps, epoch_done):
            self._save()

    def _save(self) -> None:
        """Write a checkpoint (process 0 only, holding every process's RNG state) and the summary."""
        config, p = self.config, self.progress
        states = [rng_state()] if self.parallel is None else self.parallel.all_gather_object(rng_state())
        if self.is_main:
            extra = {"fingerprint": self.fingerprint, "schedule": self.schedule.state_dict(),
                     "config": config.to_dict()}
            save_checkpoint(config.output_dir, self.params, self.optimizer, p, extra, rng_states=states)
            prune_checkpoints(config.output_dir, config.save_total_limit)
        self.last_checkpoint = checkpoints_dir(config.output_dir) / f"step-{p.global_step}"
        self._write_summary("running")
        if self.parallel is not None:
            self.parallel.barrier()  # no process runs ahead of a checkpoint that is not on disk yet

    def _write_summary(self, status: str, error: str | None = None) -> None:
        if not self.is_main:
            return
        p = self.progress
        summary = {"status": status, "global_step": p.global_step, "total_steps": self.total,
                   "epochs_completed": p.epoch, "loss_history": p.loss_history,
                   "eval_history": p.eval_history,
                   "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                   "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                   "config": self.config.to_dict()}
        if error is not None:
            summary["error"] = error
        write_trainer_state(self.config.output_dir, summary)


def _due(step: int, every: int | None, epoch_done: bool) -> bool:
    """Whether a periodic action is due: every ``every`` steps, or at each epoch end if ``every`` is None."""
    return epoch_done if every is None else step % every == 0
