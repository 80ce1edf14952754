"""Matryoshka wrapper: train a loss at several truncated embedding sizes at once.

The model runs once per batch; the wrapped loss is then evaluated on the first ``d`` features of
each embedding (re-normalised) for every ``d`` in ``matryoshka_dims``, and the weighted losses are
summed. For a GradCache loss the truncation happens inside its embedding-space loss stage, so the
caching (and its flat memory) is kept.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from embtune.errors import ConfigError
from embtune.losses._common import embed_columns, truncate_embeddings
from embtune.losses.gradcache import GradCacheLoss


class MatryoshkaLoss(nn.Module):
    """Sum of ``weight_d * loss(embeddings truncated to d dims)`` over the Matryoshka dims.

    Each embedding ``e`` is replaced by ``normalize(e[..., :d])`` before the wrapped loss sees it.
    Works with any embtune loss (anything exposing ``compute_loss_from_embeddings``):

    * a plain loss: every column is embedded once with gradients, then the wrapped loss's
      ``compute_loss_from_embeddings`` runs once per dim on the truncated embeddings;
    * a GradCache loss (:class:`~embtune.losses.CachedInfoNCELoss`): this wrapper hands its own
      embedding-space stage to the cached loss's ``cached_forward``. For each dim it truncates the
      cached embeddings, runs the wrapped loss stage on detached copies (which fills their
      gradients chunk by chunk), then back-propagates ``weight_d * grad`` through the truncation
      into the full-size embeddings. The encoder replay afterwards is unchanged.

    Equivalent to sentence-transformers' ``MatryoshkaLoss`` with ``n_dims_per_step=-1``. Under
    multi-process training the wrapped contrastive loss gathers the (truncated) embeddings of every
    process for each dim (:mod:`embtune.losses.gather`); the sum keeps its scaling.

    Inputs:
        +---------------------------------------+--------------------------------+
        | Inputs                                | Labels                         |
        +=======================================+================================+
        | whatever the wrapped loss takes       | whatever the wrapped loss takes|
        +---------------------------------------+--------------------------------+

    ``needs_labels`` (on the instance) is that of the wrapped loss.
    """

    needs_labels: bool = False

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        matryoshka_dims: Sequence[int],
        matryoshka_weights: Sequence[float] | None = None,
    ) -> None:
        """Wrap ``loss``.

        Args:
            model: the SentenceTransformer being trained (the one ``loss`` uses).
            loss: an embtune loss with ``compute_loss_from_embeddings``.
            matryoshka_dims: embedding sizes to train, e.g. ``[768, 512, 256, 128, 64]``; stored in
                descending order (with their weights).
            matryoshka_weights: one weight per dim; all 1 when None.

        Raises:
            ConfigError: on empty/non-positive/duplicate dims, dims above the model's embedding size,
                or a weight list of the wrong length.
            TypeError: if ``loss`` has no ``compute_loss_from_embeddings``.
        """
        super().__init__()
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise TypeError(f"{type(loss).__name__} has no compute_loss_from_embeddings; cannot wrap it.")
        dims = [int(d) for d in matryoshka_dims]
        if not dims or any(d <= 0 for d in dims):
            raise ConfigError(f"matryoshka_dims must be a non-empty list of positive sizes, got {dims}.")
        if len(set(dims)) != len(dims):
            raise ConfigError(f"matryoshka_dims has duplicates: {dims}.")
        weights = [1.0] * len(dims) if matryoshka_weights is None else [float(w) for w in matryoshka_weights]
        if len(weights) != len(dims):
            raise ConfigError(
                f"matryoshka_weights has {len(weights)} values but matryoshka_dims has {len(dims)}."
            )
        get_dim = getattr(model, "get_embedding_dimension", None)
        full_dim = get_dim() if callable(get_dim) else None
        if full_dim is not None and max(dims) > full_dim:
            raise ConfigError(f"matryoshka_dims {dims} exceed the model's embedding size {full_dim}.")

        order = sorted(range(len(dims)), key=lambda i: dims[i], reverse=True)
        self.model = model
        self.loss = loss
        self.matryoshka_dims: tuple[int, ...] = tuple(dims[i] for i in order)
        self.matryoshka_weights: tuple[float, ...] = tuple(weights[i] for i in order)
        self.needs_labels = bool(getattr(loss, "needs_labels", False))

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Embed the columns once and return the weighted sum of the per-dim losses.

        Args:
            sentence_features: one feature dict per column, as the wrapped loss expects.
            labels: passed to the wrapped loss.

        Returns:
            The scalar loss. For a GradCache loss, its backward replays the encoder (see the class docstring).
        """
        if isinstance(self.loss, GradCacheLoss):
            stage = self.backward_from_embeddings
            return self.loss.cached_forward(sentence_features, labels, loss_stage=stage)
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Weighted sum of the wrapped loss over the truncated embeddings.

        Args:
            embeddings: one ``(B, full_dim)`` tensor per column.
            labels: passed to the wrapped loss.

        Returns:
            The differentiable scalar ``sum_d weight_d * loss(truncate(embeddings, d))``.
        """
        total = None
        for dim, weight in zip(self.matryoshka_dims, self.matryoshka_weights):
            truncated = [truncate_embeddings(e, dim) for e in embeddings]
            term = weight * self.loss.compute_loss_from_embeddings(truncated, labels)
            total = term if total is None else total + term
        return total

    def backward_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Loss stage for GradCache: the weighted per-dim losses, with gradients into ``embeddings``.

        Args:
            embeddings: one ``(B, full_dim)`` tensor per column; when they require grad (and
                autograd is on) ``d(total)/d(embedding)`` is accumulated into their ``.grad``.
            labels: passed to the wrapped loss.

        Returns:
            The detached scalar total loss.
        """
        backward = torch.is_grad_enabled() and any(e.requires_grad for e in embeddings)
        inner_stage = getattr(self.loss, "backward_from_embeddings", None)
        total = None
        for dim, weight in zip(self.matryoshka_dims, self.matryoshka_weights):
            truncated = [truncate_embeddings(e, dim) for e in embeddings]
            if not backward:
                if inner_stage is not None:
                    value = inner_stage(truncated, labels)
                else:
                    value = self.loss.compute_loss_from_embeddings(truncated, labels)
            else:
                # Detached copies stop the wrapped stage's chunked backward at the truncated
                # embeddings; the truncation is then back-propagated once, scaled by the weight.
                leaves = [t.detach().requires_grad_() for t in truncated]
                if inner_stage is not None:
                    value = inner_stage(leaves, labels)
                else:
                    value = self.loss.compute_loss_from_embeddings(leaves, labels)
                    value.backward()
                pairs = [(t, leaf.grad) for t, leaf in zip(truncated, leaves) if leaf.grad is not None]
                if pairs:
                    torch.autograd.backward([t for t, _ in pairs], [weight * g for _, g in pairs])
            term = weight * value.detach()
            total = term if total is None else total + term
        return total

    def get_config_dict(self) -> dict[str, Any]:
        """Return the wrapped loss's name and config plus the dims and weights."""
        inner = self.loss.get_config_dict() if hasattr(self.loss, "get_config_dict") else {}
        return {
            "loss": type(self.loss).__name__,
            "loss_config": inner,
            "matryoshka_dims": list(self.matryoshka_dims),
            "matryoshka_weights": list(self.matryoshka_weights),
        }
