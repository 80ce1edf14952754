"""GradCache machinery (Gao et al. 2021, https://arxiv.org/abs/2101.06983) shared by cached losses.

A loss that depends on the whole batch at once (in-batch negatives) cannot be split into
independent mini-batches, so its activation memory normally grows with the batch. GradCache splits
the work into three steps:

1. embed every mini-batch of every column **without** autograd, keeping only the ``(B, d)``
   embeddings and a snapshot of the RNG state taken before each mini-batch;
2. compute the loss on those embeddings (detached leaves) and back-propagate it to them only,
   which gives ``dL/d(embedding)`` for every row: the gradient cache;
3. when the caller back-propagates the returned loss, re-embed each mini-batch **with** autograd,
   replaying its RNG snapshot so dropout draws the same masks, and back-propagate the cached
   gradient of that mini-batch through the encoder. Parameter gradients accumulate mini-batch by
   mini-batch.

Only one mini-batch's activations are alive at any time, so peak memory is that of a
``mini_batch_size`` forward/backward plus O(B * d) for the embeddings and their gradients.

Step 3 runs from a hook on the returned (detached) loss tensor, so ``loss.backward()`` (or the
trainer's ``accelerator.backward(loss / accumulation_steps)``) triggers it with the right upstream
gradient. Not handled: DDP ``no_sync`` choreography across mini-batches, and packed (flattened,
``cu_seq_lens``) batches.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import get_device_states, set_device_states

from embtune.errors import ConfigError

#: ``loss_stage(embeddings, labels) -> detached scalar``: computes the loss from per-column embeddings
#: and, when they are leaves that require grad, accumulates ``dL/d(embedding)`` into their ``.grad``.
LossStage = Callable[[list[Tensor], "Tensor | None"], Tensor]


class RngSnapshot:
    """The CPU and CUDA random-number-generator states at construction; a context manager restoring them.

    Entering the context forks the RNG (the outer state is put back on exit) and sets the snapshot,
    so code run inside draws exactly the random numbers that followed the snapshot.
    """

    def __init__(self, *tensors: Any) -> None:
        """Snapshot the CPU RNG and the RNG of every CUDA device holding one of ``tensors``."""
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)

    def __enter__(self) -> RngSnapshot:
        """Fork the RNG and load the snapshot. Returns self."""
        self._fork = torch.random.fork_rng(devices=self.devices, enabled=True)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        set_device_states(self.devices, self.device_states)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        """Restore the RNG state from before ``__enter__``."""
        self._fork.__exit__(*exc_info)
        self._fork = None


def feature_batch_size(features: dict[str, Any]) -> int:
    """Number of rows in a feature dict: the first dimension of ``input_ids`` (or ``attention_mask``).

    Raises:
        ConfigError: for packed batches (``cu_seq_lens_q``), which cannot be sliced by row here.
    """
    if "cu_seq_lens_q" in features:
        raise ConfigError("Cached (GradCache) losses do not support packed/flattened batches.")
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, Tensor) and value.ndim >= 1:
            return int(value.shape[0])
    return next(int(v.shape[0]) for v in features.values() if isinstance(v, Tensor) and v.ndim >= 1)


def minibatch_ranges(batch_size: int, mini_batch_size: int) -> list[tuple[int, int]]:
    """Split ``range(batch_size)`` into consecutive ``(begin, end)`` ranges of ``mini_batch_size`` rows."""
    starts = range(0, batch_size, mini_batch_size)
    return [(begin, min(begin + mini_batch_size, batch_size)) for begin in starts]


def slice_features(features: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
    """Rows ``begin..end-1`` of a padded feature dict, in a new dict.

    Tensors whose first dimension is the batch are sliced; trailing token columns that are padding
    in every selected row are dropped, so a mini-batch of short texts is embedded at its own width.
    Other values (strings, scalars, tensors not indexed by row) are passed through unchanged.
    """
    rows = feature_batch_size(features)
    width = None
    keep = None
    mask = features.get("attention_mask")
    if isinstance(mask, Tensor) and mask.ndim == 2:
        width = mask.shape[1]
        active = mask[begin:end].bool().any(dim=0)
        if active.any():
            keep = int(active.nonzero().max()) + 1
    sliced: dict[str, Any] = {}
    for key, value in features.items():
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != rows:
            sliced[key] = value
        elif keep is not None and value.ndim >= 2 and value.shape[1] == width:
            sliced[key] = value[begin:end, :keep]
        else:
            sliced[key] = value[begin:end]
    return sliced


class GradCacheLoss(nn.Module):
    """Base class of the cached losses: the three GradCache steps around a pluggable loss stage.

    A subclass sets ``self.model`` and ``self.mini_batch_size`` and implements
    :meth:`backward_from_embeddings`; its ``forward`` calls :meth:`cached_forward`. A wrapper such
    as :class:`~embtune.losses.MatryoshkaLoss` passes its own loss stage to :meth:`cached_forward`,
    so the truncation happens in embedding space while this class keeps the caching.
    """

    model: nn.Module
    mini_batch_size: int

    def backward_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        """The loss stage: compute the loss from per-column embeddings and, if they require grad, the
        gradient w.r.t. them (accumulated into ``.grad``).

        Args:
            embeddings: one ``(B, d)`` tensor per column (leaf tensors during training).
            labels: the batch labels, or None.

        Returns:
            The detached scalar loss.
        """
        raise NotImplementedError

    def _embed_minibatch(self, features: dict[str, Any]) -> Tensor:
        """Run the model on one mini-batch feature dict and return its ``sentence_embedding``."""
        return self.model(features)["sentence_embedding"]

    def cached_forward(
        self,
        sentence_features: Iterable[dict[str, Any]],
        labels: Tensor | None,
        loss_stage: LossStage | None = None,
    ) -> Tensor:
        """Run GradCache steps 1 and 2 now and register step 3 on the returned loss.

        Args:
            sentence_features: one feature dict per column.
            labels: passed to the loss stage.
            loss_stage: the embedding-space loss (see :data:`LossStage`); defaults to
                :meth:`backward_from_embeddings`.

        Returns:
            The scalar loss. With autograd enabled it is a leaf that requires grad; back-propagating
            it replays the encoder mini-batch by mini-batch and fills the parameter gradients.
            Without autograd (evaluation) it is a plain value and nothing is replayed.
        """
        features = list(sentence_features)
        stage = self.backward_from_embeddings if loss_stage is None else loss_stage
        training = torch.is_grad_enabled()
        ranges = [minibatch_ranges(feature_batch_size(f), self.mini_batch_size) for f in features]

        # Step 1: embed without autograd, one mini-batch at a time, snapshotting the RNG before each.
        columns: list[Tensor] = []
        snapshots: list[list[RngSnapshot | None]] = []
        with torch.no_grad():
            for column_features, column_ranges in zip(features, ranges):
                chunks, column_snapshots = [], []
                for begin, end in column_ranges:
                    minibatch = slice_features(column_features, begin, end)
                    column_snapshots.append(RngSnapshot(*minibatch.values()) if training else None)
                    chunks.append(self._embed_minibatch(minibatch))
                columns.append(torch.cat(chunks, dim=0))
                snapshots.append(column_snapshots)

        if not training:
            return stage(columns, labels)

        # Step 2: loss and gradient cache in embedding space.
        leaves = [column.detach().requires_grad_() for column in columns]
        loss_value = stage(leaves, labels)
        cache = [leaf.grad for leaf in leaves]
        unused = [str(i) for i, grad in enumerate(cache) if grad is None]
        if unused:
            raise ConfigError(
                f"{type(self).__name__} did not use input column(s) {', '.join(unused)}; "
                "remove them from the dataset."
            )

        # Step 3 runs when the caller back-propagates the loss.
        loss = loss_value.detach().requires_grad_()
        loss.register_hook(
            partial(self._replay, features=features, ranges=ranges, snapshots=snapshots, cache=cache)
        )
        return loss

    def _replay(
        self,
        grad_output: Tensor,
        features: list[dict[str, Any]],
        ranges: list[list[tuple[int, int]]],
        snapshots: list[list[RngSnapshot]],
        cache: list[Tensor],
    ) -> None:
        """Step 3: re-embed each mini-batch with autograd and back-propagate ``grad_output * cache``."""
        with torch.enable_grad():
            for minibatch, grad, snapshot in self._replay_items(features, ranges, snapshots, cache):
                with snapshot:
                    embeddings = self._embed_minibatch(minibatch)
                if not embeddings.requires_grad:  # frozen encoder: nothing to train
                    continue
                dtype = torch.promote_types(torch.promote_types(embeddings.dtype, grad.dtype), torch.float32)
                # d/dθ <e(θ), g> = (de/dθ)^T g: the chain rule through the cached gradient.
                surrogate = torch.dot(embeddings.flatten().to(dtype), grad.flatten().to(dtype))
                (surrogate * grad_output.to(dtype)).backward()

    @staticmethod
    def _replay_items(
        features: list[dict[str, Any]],
        ranges: list[list[tuple[int, int]]],
        snapshots: list[list[RngSnapshot]],
        cache: list[Tensor],
    ) -> Iterator[tuple[dict[str, Any], Tensor, RngSnapshot]]:
        """Yield ``(mini-batch features, its cached gradient, its RNG snapshot)`` in step-1 order."""
        for column_features, column_ranges, column_snapshots, grad in zip(features, ranges, snapshots, cache):
            for (begin, end), snapshot in zip(column_ranges, column_snapshots):
                yield slice_features(column_features, begin, end), grad[begin:end], snapshot
