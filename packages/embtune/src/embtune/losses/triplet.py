"""Triplet margin loss on (anchor, positive, negative) embeddings."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from embtune.errors import ConfigError
from embtune.losses._common import check_columns, embed_columns, upcast


def _euclidean(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise L2 distance ``||x_i - y_i||_2``."""
    return (x - y).norm(p=2, dim=-1)


def _manhattan(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise L1 distance ``sum |x_i - y_i|``."""
    return (x - y).abs().sum(dim=-1)


def _cosine(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise cosine distance ``1 - cos(x_i, y_i)``."""
    return 1 - (F.normalize(x, p=2, dim=-1) * F.normalize(y, p=2, dim=-1)).sum(dim=-1)


#: Distance name -> row-wise distance function ``(B, d), (B, d) -> (B,)``.
DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "euclidean": _euclidean,
    "cosine": _cosine,
    "manhattan": _manhattan,
}


class TripletLoss(nn.Module):
    """``mean_i max(dist(a_i, p_i) - dist(a_i, n_i) + margin, 0)``.

    The anchor must be closer to its positive than to its negative by at least ``margin``. Equal to
    sentence-transformers' ``TripletLoss`` with ``TripletDistanceMetric.EUCLIDEAN`` / ``COSINE`` /
    ``MANHATTAN``. The default margin 5 suits unnormalised embeddings; with a ``Normalize`` module
    (distances at most 2) it keeps every triplet active, so consider a smaller margin there.

    Inputs:
        +---------------------------------------+--------+
        | Inputs                                | Labels |
        +=======================================+========+
        | (anchor, positive, negative) triplets | none   |
        +---------------------------------------+--------+
    """

    needs_labels: bool = False

    def __init__(self, model: nn.Module, distance: str = "euclidean", margin: float = 5.0) -> None:
        """Build the loss.

        Args:
            model: the SentenceTransformer being trained.
            distance: ``"euclidean"``, ``"cosine"`` or ``"manhattan"``.
            margin: the required gap between negative and positive distance.

        Raises:
            ConfigError: on an unknown distance or a negative margin.
        """
        super().__init__()
        if distance not in DISTANCES:
            raise ConfigError(f"Unknown triplet distance {distance!r}; valid: {', '.join(DISTANCES)}.")
        if margin < 0:
            raise ConfigError(f"Triplet margin must be non-negative, got {margin}.")
        self.model = model
        self.distance = distance
        self.margin = float(margin)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Embed the three columns and return the loss.

        Args:
            sentence_features: feature dicts for (anchor, positive, negative).
            labels: ignored.

        Returns:
            The scalar loss.
        """
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Compute the loss from ``[anchors, positives, negatives]``, each ``(B, d)``.

        Args:
            embeddings: the three columns' embeddings.
            labels: ignored.

        Returns:
            The scalar loss (mean over the batch).

        Raises:
            ConfigError: unless there are exactly three columns of equal length.
        """
        check_columns(type(self).__name__, embeddings, exactly=3, layout="(anchor, positive, negative)")
        anchor, positive, negative = (upcast(e) for e in embeddings)
        distance = DISTANCES[self.distance]
        return F.relu(distance(anchor, positive) - distance(anchor, negative) + self.margin).mean()

    def get_config_dict(self) -> dict[str, Any]:
        """Return the hyperparameters (for model cards and logs)."""
        return {"distance": self.distance, "margin": self.margin}
