"""Reranker losses: sentence-transformers' own cross-encoder losses, by name.

embtune trains rerankers with ST's losses unchanged (they are the reference users compare with):

- ``"bce"``: ``BinaryCrossEntropyLoss``, pointwise; each (query, document) gets label 1 or 0. Rows of
  (query, positive, negatives...) are expanded to one labelled pair each (`embtune.rerankers.data`).
- ``"listwise"``: ST's cross-encoder ``MultipleNegativesRankingLoss``: a softmax over the positive,
  the row's hard negatives and ``num_negatives`` documents of other rows, cross-entropy on the positive.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from embtune.errors import ConfigError

RERANKER_LOSSES = ("bce", "listwise")
POINTWISE = frozenset({"bce"})


def reranker_loss_key(name: str) -> str:
    """Canonical reranker loss name for ``name`` (case-insensitive; ConfigError listing the valid ones)."""
    key = name.strip().lower().replace("-", "_")
    aliases = {"binary_cross_entropy": "bce", "mnrl": "listwise", "softmax": "listwise"}
    key = aliases.get(key, key)
    if key not in RERANKER_LOSSES:
        raise ConfigError(f"unknown reranker loss {name!r}; choose one of {', '.join(RERANKER_LOSSES)}")
    return key


def get_reranker_loss(name: str, model: Any, **kwargs: Any) -> nn.Module:
    """Build ST's cross-encoder loss ``name`` on ``model`` with ``kwargs`` (e.g. ``num_negatives=4``).

    In: a loss name (`RERANKER_LOSSES`), the CrossEncoder, the loss's constructor arguments.
    Out: the loss module, with ``needs_labels`` set (True for pointwise losses) for the training loop.
    """
    from sentence_transformers.cross_encoder import losses

    key = reranker_loss_key(name)
    cls = losses.BinaryCrossEntropyLoss if key == "bce" else losses.MultipleNegativesRankingLoss
    try:
        loss = cls(model, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"reranker loss {key!r}: {exc}") from None
    loss.needs_labels = key in POINTWISE
    return loss


def is_pointwise(loss: Any) -> bool:
    """True when ``loss`` (a name or a loss module) scores labelled (query, document) pairs one by one."""
    if isinstance(loss, str):
        return reranker_loss_key(loss) in POINTWISE
    from sentence_transformers.cross_encoder import losses

    return isinstance(loss, (losses.BinaryCrossEntropyLoss, losses.MSELoss))
