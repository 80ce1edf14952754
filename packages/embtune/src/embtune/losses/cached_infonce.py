"""InfoNCE with GradCache: the batch size of :class:`~embtune.losses.InfoNCELoss` at flat memory.

Same loss value and parameter gradients as :class:`~embtune.losses.InfoNCELoss` (and as
sentence-transformers' ``CachedMultipleNegativesRankingLoss``), computed in mini-batches; see
:mod:`embtune.losses.gradcache` for the three steps. Under multi-process training the cached
embeddings are gathered across processes in step 2 (see :meth:`CachedInfoNCELoss.backward_from_embeddings`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from embtune.errors import ConfigError
from embtune.losses._common import check_columns
from embtune.losses.gather import gather_columns, gathering_active
from embtune.losses.gradcache import GradCacheLoss
from embtune.losses.infonce import gathered_infonce, infonce_from_embeddings


class CachedInfoNCELoss(GradCacheLoss):
    """InfoNCE (in-batch + hard negatives, optional symmetric term) trained with GradCache.

    The loss is exactly :class:`~embtune.losses.InfoNCELoss`; only the way it is computed differs:

    1. every column is embedded ``mini_batch_size`` rows at a time under ``torch.no_grad()``, so
       no activations are kept: only the ``(B, d)`` embeddings survive, plus the RNG state taken
       before each mini-batch;
    2. the loss is computed on those embeddings in chunks of ``mini_batch_size`` anchor rows, each
       chunk back-propagated at once into the embeddings: the score matrix alive at any time is
       ``mini_batch_size x B * (1 + k)`` instead of ``B x B * (1 + k)``;
    3. ``loss.backward()`` re-embeds each mini-batch with autograd, replaying its RNG state (dropout
       draws the same masks as in step 1) and pushes the cached ``dL/d(embedding)`` through the
       encoder, one mini-batch graph at a time.

    Why memory is flat in the batch size ``B``: encoder activations, the dominant cost, exist for
    one mini-batch at a time in steps 1 and 3; what grows with ``B`` is the embeddings and their
    gradients, ``O(B * (1 + k) * d)`` numbers (e.g. 256 MiB per column for B=65536, d=1024 in fp32),
    and one ``mini_batch_size x B(1 + k)`` chunk of scores. The price is one extra forward pass per
    example (roughly 20-50 % more compute).

    Inputs:
        +-------------------------------------------------+--------+
        | Inputs                                          | Labels |
        +=================================================+========+
        | (anchor, positive) pairs                        | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative) triplets           | none   |
        +-------------------------------------------------+--------+
        | (anchor, positive, negative_1, ..., negative_k) | none   |
        +-------------------------------------------------+--------+

    Multi-process training: as :class:`~embtune.losses.InfoNCELoss`, the embeddings of all processes
    are gathered (step 2 only; the encoder replay of step 3 stays local) and the loss is this
    process's share, scaled for averaging. Under ``embtune.train`` (which all-reduces gradients
    itself) the averaged gradient is the single-process one.

    Limitations: when the model is wrapped in torch's DDP, the replay's several backward passes each
    trigger DDP's gradient all-reduce (no ``no_sync`` handling); no packed (flattened) batches.
    """

    needs_labels: bool = False

    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        mini_batch_size: int = 32,
        symmetric: bool = False,
        gather_across_devices: bool = True,
    ) -> None:
        """Build the loss.

        Args:
            model: the SentenceTransformer being trained.
            scale: inverse temperature (``scale = 1 / temperature``).
            mini_batch_size: rows embedded per forward pass and anchor rows per loss chunk; the
                memory knob (set it as high as memory allows, it only trades speed).
            symmetric: also train the positive -> anchor direction, as ``InfoNCELoss(symmetric=True)``.
            gather_across_devices: under multi-process training, use every process's rows as
                negatives (False: each process only its own). No effect in a single process.

        Raises:
            ConfigError: if ``scale`` is not positive or ``mini_batch_size`` is below 1.
        """
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"InfoNCE scale must be positive, got {scale}.")
        if int(mini_batch_size) < 1:
            raise ConfigError(f"mini_batch_size must be at least 1, got {mini_batch_size}.")
        self.model = model
        self.scale = float(scale)
        self.mini_batch_size = int(mini_batch_size)
        self.symmetric = bool(symmetric)
        self.gather_across_devices = bool(gather_across_devices)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Run GradCache steps 1-2 and return the loss; step 3 runs on ``loss.backward()``.

        Args:
            sentence_features: feature dicts for (anchor, positive, negative_1, ..., negative_k).
            labels: ignored.

        Returns:
            The scalar loss (a leaf tensor whose backward hook fills the parameter gradients).
        """
        features = list(sentence_features)
        if len(features) < 2:
            raise ConfigError(f"{type(self).__name__} needs at least 2 input columns, got {len(features)}.")
        return self.cached_forward(features, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Compute the (differentiable) loss from embeddings of the whole batch, in one piece.

        Args:
            embeddings: ``[anchors, positives, negatives_1, ..., negatives_k]``, each ``(B, d)``.
            labels: ignored.

        Returns:
            The scalar loss, identical to ``InfoNCELoss.compute_loss_from_embeddings``.
        """
        check_columns(type(self).__name__, embeddings, minimum=2, layout="(anchor, positive, negatives...)")
        if gathering_active(self.gather_across_devices):
            return gathered_infonce(gather_columns(embeddings), scale=self.scale, symmetric=self.symmetric)
        return infonce_from_embeddings(
            embeddings[0], torch.cat(embeddings[1:], dim=0), scale=self.scale, symmetric=self.symmetric
        )

    def backward_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """GradCache step 2: the loss in chunks of ``mini_batch_size`` anchor rows.

        Args:
            embeddings: ``[anchors, positives, negatives_1, ...]``, each ``(B, d)``. When autograd is
                enabled and they require grad, each chunk is back-propagated at once, accumulating
                ``dL/d(embedding)`` into their ``.grad``.
            labels: ignored.

        Returns:
            The detached scalar loss (the batch mean, as :meth:`compute_loss_from_embeddings`).
        """
        batch_size = check_columns(
            type(self).__name__, embeddings, minimum=2, layout="(anchor, positive, negatives...)"
        )
        backward = torch.is_grad_enabled() and any(e.requires_grad for e in embeddings)
        if gathering_active(self.gather_across_devices):
            return self._gathered_stage(embeddings, backward)
        anchors, candidates = embeddings[0], torch.cat(embeddings[1:], dim=0)
        total = anchors.new_zeros((), dtype=torch.float32)
        for begin in range(0, batch_size, self.mini_batch_size):
            rows = (begin, min(begin + self.mini_batch_size, batch_size))
            part = infonce_from_embeddings(anchors, candidates, self.scale, self.symmetric, rows=rows)
            if backward:
                # Each chunk's graph is freed by its backward; only the shared torch.cat is retained.
                part.backward(retain_graph=rows[1] < batch_size)
            total = total + part.detach()
            del part
        return total

    def _gathered_stage(self, embeddings: list[Tensor], backward: bool) -> Tensor:
        """Step 2 across processes: gather, chunked local-row losses, one all-reduce of the gradient.

        In: this process's ``(B_r, d)`` columns; ``backward`` as in :meth:`backward_from_embeddings`.
        Out: the detached share (see ``gathered_infonce``); with ``backward``, the gradient of the
        sum of all processes' shares w.r.t. this process's rows is added to ``.grad``.
        The chunks back-propagate into detached copies of the gathered columns only, so the number
        of chunks may differ between processes; the single collective is the gather's backward.
        """
        batch = gather_columns(embeddings)
        gathered = batch.columns
        if backward:
            batch = replace(batch, columns=[column.detach().requires_grad_() for column in gathered])
        total = embeddings[0].new_zeros((), dtype=torch.float32)
        for begin in range(0, batch.local_rows, self.mini_batch_size):
            rows = (begin, min(begin + self.mini_batch_size, batch.local_rows))
            part = gathered_infonce(batch, self.scale, self.symmetric, rows=rows)
            if backward:
                part.backward()
            total = total + part.detach()
            del part
        if backward:
            grads = [c.grad if c.grad is not None else torch.zeros_like(c) for c in batch.columns]
            torch.autograd.backward(gathered, grads)
        return total

    def get_config_dict(self) -> dict[str, Any]:
        """Return the hyperparameters (for model cards and logs)."""
        return {
            "scale": self.scale,
            "symmetric": self.symmetric,
            "mini_batch_size": self.mini_batch_size,
            "similarity": "cosine",
            "gather_across_devices": self.gather_across_devices,
        }

    @property
    def temperature(self) -> float:
        """The softmax temperature, ``1 / scale``."""
        return 1.0 / self.scale
