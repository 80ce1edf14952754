"""Multi-process data-parallel training for ``embtune.train`` (torchrun, ``accelerate launch``).

Launched as ``torchrun --nproc_per_node N your_script.py`` (or ``accelerate launch``), every process
runs the same ``train(...)`` call. :meth:`DataParallel.detect` joins the process group that the
launcher describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``): NCCL with one GPU per process when CUDA is available, gloo on CPU.

What each process does:

* **Same batches, own shard.** ``TrainConfig.batch_size`` is the *global* batch. Every process
  builds the identical no-duplicate plan (a function of data, batch size, seed and epoch only) and
  takes its contiguous slice of each batch (:meth:`DataParallel.shard`); the contrastive losses
  gather the slices back (:mod:`embtune.losses.gather`), so an anchor sees the whole global
  batch as negatives. A run on N processes follows the same trajectory as a single-process run
  with the same settings (up to float rounding and dropout draws), and its checkpoints resume on
  any number of processes.
* **Gradients averaged explicitly, no DDP wrapper.** After the backward passes of a step, the
  trainable parameters' gradients are summed across processes in a few coalesced ``all_reduce``
  calls and divided by N (:meth:`DataParallel.average_gradients`); clipping and AdamW then run on
  identical gradients, so the weights stay identical everywhere. We do not wrap the model in
  ``DistributedDataParallel`` because (1) the GradCache loss replays the encoder in several
  backward passes per step from a hook, and gradient accumulation runs several more, each of which
  would trigger DDP's all-reduce unless choreographed with ``no_sync``; (2) DDP needs every process
  to run forward and backward over the same parameters every step, which tiny tail batches break;
  (3) the losses hold the bare model (``loss.model``), and routing them through a wrapper would
  mean rewriting the user's loss. The price is that communication does not overlap the backward
  pass: negligible for LoRA (a few MB of gradients), noticeable only for full fine-tuning of large
  models on fast GPUs. The loss scaling is the DDP convention all the same (each process
  back-propagates its share, gradients are *averaged*), so the losses are also exact under DDP
  (e.g. ``SentenceTransformerTrainer`` on several GPUs).
* **Rank 0 writes.** Only process 0 shows progress bars, logs, evaluates, writes checkpoints and
  ``trainer_state.json``; the other processes wait at a barrier. After ``train`` returns, every
  process holds the same trained weights: save them where :func:`is_main_process` is True, then
  :func:`wait_for_everyone`. Every process reads the same
  checkpoint on resume, so ``output_dir`` must be visible to all of them (one machine, or shared
  storage). A checkpoint holds the random-number-generator state of every process.
"""
from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from embtune.errors import ConfigError
from embtune.losses.gather import process_world, shard_weight

logger = logging.getLogger(__name__)

_BUCKET_ELEMENTS = 1 << 24  # at most 16M numbers (64 MB in fp32) per coalesced collective


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group a launcher (torchrun, ``accelerate launch``) describes in the environment.

    In: ``backend``: "nccl", "gloo" or None (NCCL when CUDA is available, else gloo). Out: True when
    this process now belongs to a group of more than one process (also when it already did), False
    when ``WORLD_SIZE`` is unset or 1 (nothing is done). With CUDA, the current device becomes
    ``cuda:LOCAL_RANK``: call this before loading the model so that ``"cuda"`` means this process's
    GPU. The group is destroyed at interpreter exit. Raises ConfigError when the launcher's
    variables are incomplete.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return False
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing or not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing) or 'torch.distributed'} is missing; "
                          "launch with torchrun or accelerate launch")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    atexit.register(_destroy_process_group)
    return True


def is_main_process() -> bool:
    """True in a single process and on process 0 of a multi-process run: the one that should save
    the model, merge it and print. In: nothing (reads torch.distributed)."""
    return process_world()[0] == 0


def wait_for_everyone() -> None:
    """Barrier across all processes of a multi-process run; does nothing in a single process."""
    if process_world()[1] > 1:
        torch.distributed.barrier()


@dataclass
class DataParallel:
    """This process's place in a multi-process run and the collectives ``embtune.train`` needs."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def detect(cls) -> DataParallel | None:
        """The running process group (initialised from the environment if needed), or None for a
        single process. In: nothing (reads torch.distributed and the launcher's environment)."""
        if not init_distributed():
            return None
        dist = torch.distributed
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)

    @property
    def is_main(self) -> bool:
        """True on process 0, the one that writes files, logs and shows progress."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where small tensors for collectives live: this process's GPU under NCCL, else the CPU."""
        if torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def training_device(self, current: torch.device) -> torch.device:
        """The device this process should train on, given the model's ``current`` one: under CUDA,
        ``cuda:LOCAL_RANK`` (one GPU per process), else ``current`` unchanged."""
        if current.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return current

    def shard(self, rows: Sequence[int]) -> tuple[list[int], float, bool]:
        """This process's part of one global batch.

        In: the row indices of a global batch, in plan order. Out: ``(rows, weight, gather)``.
        Normally a contiguous slice (sizes differ by at most one, earlier processes take the extra
        rows), ``weight = world_size * len(slice) / len(rows)`` for a loss that does not gather
        (``embtune.losses.gather.shard_weight``; a gathering loss scales itself) and
        ``gather=True``. A batch with fewer rows than processes is computed whole by every process,
        weight 1, without gathering: averaging identical gradients gives the single-process one, and
        no process is left with no rows.
        """
        count, world = len(rows), self.world_size
        if count < world:
            return list(rows), 1.0, False
        base, extra = divmod(count, world)
        begin = self.rank * base + min(self.rank, extra)
        size = base + (1 if self.rank < extra else 0)
        return list(rows[begin:begin + size]), shard_weight(size, count, world), True

    def sum(self, value: float) -> float:
        """Sum of ``value`` over all processes (float64), returned on every process."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(tensor)
        return float(tensor)

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each parameter's ``.grad`` by its mean over all processes.

        In: the trainable parameters, in the same order on every process. A parameter that has a
        gradient on some process but not on this one counts as zero here; one without a gradient
        anywhere keeps ``grad=None`` (so AdamW skips it, as in a single process).
        """
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.comm_device)
        torch.distributed.all_reduce(flags)
        present = []
        for param, flag in zip(params, flags.tolist()):
            if flag and param.grad is None:
                param.grad = torch.zeros_like(param)
            if flag:
                present.append(param.grad)
        scale = 1.0 / self.world_size

        def reduce(flat: torch.Tensor) -> None:
            torch.distributed.all_reduce(flat)
            flat.mul_(scale)

        _coalesced(present, reduce)

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Copy process 0's values of ``params`` to every process (in place, no autograd)."""
        with torch.no_grad():
            _coalesced([p.detach() for p in params], lambda flat: torch.distributed.broadcast(flat, src=0))

    def broadcast_object(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process (picklable objects; sent between our own processes)."""
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every process gets here."""
        torch.distributed.barrier()


def _coalesced(tensors: Sequence[torch.Tensor], op: Callable[[torch.Tensor], Any]) -> None:
    """Apply the in-place collective ``op`` to ``tensors`` through flat buffers, one per device and
    dtype and at most ``_BUCKET_ELEMENTS`` numbers each, then copy the results back."""
    buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
    filled: dict[tuple[torch.device, torch.dtype], int] = {}
    for tensor in tensors:
        key = (tensor.device, tensor.dtype)
        groups = buckets.setdefault(key, [[]])
        if groups[-1] and filled[key] + tensor.numel() > _BUCKET_ELEMENTS:
            groups.append([])
            filled[key] = 0
        groups[-1].append(tensor)
        filled[key] = filled.get(key, 0) + tensor.numel()
    for groups in buckets.values():
        for group in groups:
            flat = torch.cat([t.reshape(-1) for t in group])
            op(flat)
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()
