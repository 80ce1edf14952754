"""Cosine-similarity regression: mean squared error between cos(u, v) and a float label."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embtune.losses._common import check_columns, check_labels, embed_columns, upcast


class CosineMSELoss(nn.Module):
    """``mean_i (cos(u_i, v_i) - y_i)^2`` for labelled pairs.

    The same as sentence-transformers' ``CosineSimilarityLoss`` with its defaults (``MSELoss`` and
    no score transformation). Labels should lie in the cosine range, usually ``[0, 1]`` or ``[-1, 1]``.

    Inputs:
        +--------------------------------+------------------------+
        | Inputs                         | Labels                 |
        +================================+========================+
        | (sentence1, sentence2) pairs   | float similarity score |
        +--------------------------------+------------------------+
    """

    needs_labels: bool = True

    def __init__(self, model: nn.Module) -> None:
        """Build the loss.

        Args:
            model: the SentenceTransformer being trained.
        """
        super().__init__()
        self.model = model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        """Embed both columns and return the loss.

        Args:
            sentence_features: feature dicts for (sentence1, sentence2).
            labels: ``(B,)`` target cosine similarities.

        Returns:
            The scalar loss.
        """
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        """Compute the loss from the embeddings of both columns.

        Args:
            embeddings: ``[u, v]``, each ``(B, d)``.
            labels: ``(B,)`` targets (any shape with ``B`` elements).

        Returns:
            The scalar mean squared error.

        Raises:
            ConfigError: without exactly two columns, or without one label per pair.
        """
        name = type(self).__name__
        batch_size = check_columns(name, embeddings, exactly=2, layout="(sentence1, sentence2)")
        labels = check_labels(name, labels, batch_size)
        cosine = torch.cosine_similarity(upcast(embeddings[0]), upcast(embeddings[1]))
        return F.mse_loss(cosine, labels.to(cosine.dtype))

    def get_config_dict(self) -> dict[str, Any]:
        """Return the hyperparameters (none besides the fixed choice of MSE)."""
        return {"loss_fct": "mse"}
