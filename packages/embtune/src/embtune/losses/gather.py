"""Cross-process in-batch negatives: gather every process's embeddings, keeping the gradient path.

Under data-parallel training (torchrun, accelerate, ``SentenceTransformerTrainer`` on several GPUs)
each process embeds its own shard of the global batch. A contrastive loss computed on the shard alone
sees only ``B / N`` negatives; gathering the embeddings of all ``N`` processes gives every anchor the
whole global batch as negatives, as a single process with the concatenated batch would.

Convention (as sentence-transformers' ``gather_across_devices`` and OpenCLIP's local loss): process
``r`` computes the loss rows of **its own anchors** against the **gathered** candidates; its anchors'
targets are offset by the rows of the processes before it. It returns its share of the global-batch
loss scaled for averaging, ``N / B * sum of its row losses`` (``N`` processes, ``B`` rows in all):
with equal shards that is simply the mean over its own anchors. The gather's backward sums, over
processes, the gradients every process computed for each row and hands each process the slice of
its own rows. So DDP's (or embtune's) *mean* of the per-process parameter gradients is exactly the
gradient of the single-process loss on the concatenated batch, and the mean of the per-process loss
values is that loss, for equal and unequal shards alike. (A loss that does not gather returns the
mean over its own rows; :func:`shard_weight` makes that exact for unequal shards, and
:func:`count_gathers` tells ``embtune.train`` which of the two it got.)

Why a small autograd Function (:class:`_AllGatherRows`) rather than
``torch.distributed.nn.functional.all_gather``:

* the shards may differ in size (the last batch of an epoch, the no-duplicate planner's tail
  batches); torch's version needs equal shapes, this one pads to the largest shard for the transfer
  and returns exactly the real rows;
* its backward is one ``all_reduce`` on every backend; torch's falls back to one ``scatter`` per
  process on gloo (which has no reduce-scatter);
* it returns one concatenated tensor, not a tuple of per-process tensors.

The all-reduce moves about twice the bytes of a reduce-scatter, but these are embedding gradients
(``B * columns * d`` numbers), small next to the parameter gradients averaged after backward.

Gathering happens when ``torch.distributed`` is initialised with more than one process, the loss was
built with ``gather_across_devices=True`` (the default) and the caller is not inside
:func:`local_negatives`. Every process must then call the loss the same number of times per step:
the gather is a collective (to score with a loss on one process only, wrap the call in
:func:`local_negatives`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

_LOCAL_ONLY: ContextVar[bool] = ContextVar("embtune_local_negatives", default=False)
_GATHER_COUNTERS: ContextVar[tuple[GatherCount, ...]] = ContextVar("embtune_gather_counters", default=())


@dataclass
class GatherCount:
    """How many times :func:`gather_columns` ran inside a :func:`count_gathers` block."""

    count: int = 0


@contextmanager
def count_gathers() -> Iterator[GatherCount]:
    """Context yielding a GatherCount that counts the cross-process gathers done inside it.

    In: nothing. Out: the counter (read ``.count`` after the block). ``embtune.train`` uses it to
    tell a loss that gathered (and so already returned its scaled share) from one that did not.
    """
    counter = GatherCount()
    token = _GATHER_COUNTERS.set(_GATHER_COUNTERS.get() + (counter,))
    try:
        yield counter
    finally:
        _GATHER_COUNTERS.reset(token)


@contextmanager
def local_negatives() -> Iterator[None]:
    """Context in which embtune's losses do not gather across processes (each uses its own batch).

    In: nothing. Out: nothing; on exit the previous setting is back. ``embtune.train`` uses it when a
    global batch has fewer rows than there are processes: each process then computes the whole batch.
    """
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def process_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gathering_active(enabled: bool = True) -> bool:
    """Whether a loss with ``gather_across_devices=enabled`` gathers now: enabled, more than one
    process, and not inside :func:`local_negatives`."""
    return bool(enabled) and not _LOCAL_ONLY.get() and process_world()[1] > 1


def shard_weight(local_rows: int, total_rows: int, world_size: int) -> float:
    """Factor for the local-mean loss of a loss that does *not* gather, so that the mean over processes
    of the weighted gradients is the gradient of the global-batch mean: ``world_size * local_rows /
    total_rows``.

    In: this process's rows, the rows of all processes together, the number of processes. Out: the
    factor (1.0 for equal shards).
    """
    return world_size * local_rows / total_rows


@dataclass
class GatheredBatch:
    """Columns of the global batch as seen by one process after :func:`gather_columns`."""

    columns: list[Tensor]
    """One ``(total_rows, d)`` tensor per input column: every process's rows, in process order."""
    offset: int
    """Global index of this process's first row."""
    local_rows: int
    """Rows this process contributed."""
    total_rows: int
    """Rows of all processes together."""
    world_size: int
    """Number of processes."""


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 with per-process row counts; backward all-reduces and keeps own rows."""

    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: tuple[int, ...], rank: int) -> Tensor:
        """Gather ``tensor`` (``sizes[rank]`` rows) from every process; returns ``(sum(sizes), ...)``."""
        dist = torch.distributed
        most = max(sizes)
        padded = tensor.contiguous()
        if padded.shape[0] < most:
            padded = torch.cat([padded, padded.new_zeros((most - padded.shape[0], *padded.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([part[:rows] for part, rows in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        """Sum every process's gradient of the gathered rows; return the slice of this process's rows."""
        total = grad.contiguous().clone()
        torch.distributed.all_reduce(total)
        begin = sum(ctx.sizes[:ctx.rank])
        return total[begin:begin + ctx.sizes[ctx.rank]], None, None


def gather_columns(columns: Sequence[Tensor]) -> GatheredBatch:
    """All-gather the rows of every column from every process, differentiably.

    In: one ``(local_rows, d)`` tensor per column (all with the same rows, dtype and device); must be
    called by every process of the default group. Out: a GatheredBatch whose columns hold every
    process's rows in process order. Gradients of the gathered columns flow back to ``columns``
    (summed over processes, see the module docstring). One size exchange and one data all-gather,
    for all columns together.
    """
    for counter in _GATHER_COUNTERS.get():
        counter.count += 1
    dist = torch.distributed
    rank, world = process_world()
    local = int(columns[0].shape[0])
    counts = torch.tensor([local], dtype=torch.int64, device=columns[0].device)
    gathered_counts = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(gathered_counts, counts)
    sizes = tuple(int(c) for c in gathered_counts)
    stacked = torch.stack(list(columns), dim=1)  # (local_rows, columns, d)
    everything = _AllGatherRows.apply(stacked, sizes, rank)
    return GatheredBatch(columns=list(everything.unbind(dim=1)), offset=sum(sizes[:rank]),
                         local_rows=local, total_rows=sum(sizes), world_size=world)
