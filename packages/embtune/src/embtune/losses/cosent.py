"""CoSENT: a ranking loss on the cosine similarities of labelled sentence pairs."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embtune.errors import ConfigError
from embtune.losses._common import check_columns, check_labels, embed_columns, upcast


class CoSENTLoss(nn.Module):
    """CoSENT (Su 2022; Huang et al. 2024): pairs with a higher label must get a higher cosine.

    With ``s_i = scale * cos(u_i, v_i)`` for pair ``i`` of the batch and ``y_i`` its label,

    ``loss = log(1 + sum over (i, j) with y_i > y_j of exp(s_j - s_i))``.

    Only the order of the labels matters (ties contribute nothing), so labels can be on any scale.
    Equal to sentence-transformers' ``CoSENTLoss`` with its default ``pairwise_cos_sim``; computed
    here on the ``B x B`` matrix of pair differences (fine for batches of a few thousand pairs).

    Inputs:
        +--------------------------------+------------------------+
        | Inputs                         | Labels                 |
        +================================+========================+
        | (sentence1, sentence2) pairs   | float similarity score |
        +--------------------------------+------------------------+
    """

    needs_labels: bool = True

    def __init__(self, model: nn.Module, scale: float = 20.0) -> None:
        """Build the loss.

        Args:
            model: the SentenceTransformer being trained.
            scale: inverse temperature multiplying the cosine similarities.

        Raises:
            ConfigError: if ``scale`` is not positive.
        """
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"CoSENT scale must be positive, got {scale}.")
        self.model = model
        self.scale = float(scale)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        """Embed both columns and return the loss.

        Args:
            sentence_features: feature dicts for (sentence1, sentence2).
            labels: ``(B,)`` float scores, one per pair.

        Returns:
            The scalar loss.
        """
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        """Compute the loss from the embeddings of both columns.

        Args:
            embeddings: ``[u, v]``, each ``(B, d)``.
            labels: ``(B,)`` scores (any shape with ``B`` elements).

        Returns:
            The scalar loss.

        Raises:
            ConfigError: without exactly two columns, or without one label per pair.
        """
        name = type(self).__name__
        batch_size = check_columns(name, embeddings, exactly=2, layout="(sentence1, sentence2)")
        labels = check_labels(name, labels, batch_size)
        u = F.normalize(upcast(embeddings[0]), p=2, dim=-1)
        v = F.normalize(upcast(embeddings[1]), p=2, dim=-1)
        scores = (u * v).sum(dim=-1) * self.scale
        differences = scores[None, :] - scores[:, None]  # [i, j] = s_j - s_i
        ranked = labels[:, None] > labels[None, :]  # [i, j] = y_i > y_j
        differences = differences.masked_fill(~ranked, float("-inf"))
        return torch.logsumexp(torch.cat((scores.new_zeros(1), differences.flatten())), dim=0)

    def get_config_dict(self) -> dict[str, Any]:
        """Return the hyperparameters (for model cards and logs)."""
        return {"scale": self.scale, "similarity": "cosine"}
