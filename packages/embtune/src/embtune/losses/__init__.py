"""Training losses for embedding models, drop-in compatible with sentence-transformers.

Every loss is an ``nn.Module`` whose first constructor argument is the ``SentenceTransformer``;
``forward(sentence_features, labels)`` embeds each column with ``model(features)["sentence_embedding"]``
and delegates to ``compute_loss_from_embeddings(embeddings, labels)``. They run unchanged inside
``SentenceTransformerTrainer``. ``needs_labels`` on each class tells a training loop whether the
dataset needs a label column. :func:`get_loss` builds one by name.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from embtune.errors import ConfigError
from embtune.choices import LOSS_NAMES, LOSS_SPECS, loss_key
from embtune.losses.cached_infonce import CachedInfoNCELoss
from embtune.losses.cosent import CoSENTLoss
from embtune.losses.cosine_mse import CosineMSELoss
from embtune.losses.infonce import InfoNCELoss, infonce_from_embeddings
from embtune.losses.matryoshka import MatryoshkaLoss
from embtune.losses.triplet import TripletLoss

_CLASSES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    CachedInfoNCELoss, CoSENTLoss, CosineMSELoss, InfoNCELoss, TripletLoss)}
# name -> (class, fixed constructor arguments), from the torch-free name table
_REGISTRY: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    name: (_CLASSES[class_name], fixed) for name, (class_name, fixed) in LOSS_SPECS.items()}


def get_loss(
    name: str,
    model: nn.Module,
    matryoshka_dims: Sequence[int] | None = None,
    *,
    matryoshka_weights: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a loss by name.

    Args:
        name: one of :data:`LOSS_NAMES` (case-insensitive, ``-`` accepted for ``_``): ``"infonce"``
            (alias ``"mnrl"``), ``"infonce_symmetric"``, ``"cached_infonce"`` (alias
            ``"gradcache"``), ``"cosent"``, ``"cosine_mse"``, ``"triplet"``.
        model: the SentenceTransformer to train.
        matryoshka_dims: when given, wrap the loss in :class:`MatryoshkaLoss` with these dims.
        matryoshka_weights: per-dim weights for the Matryoshka wrapper (all 1 when None).
        **kwargs: constructor arguments of the chosen loss, e.g. ``scale=30`` or ``mini_batch_size=16``.

    Returns:
        The loss module (wrapped in :class:`MatryoshkaLoss` when ``matryoshka_dims`` is given).

    Raises:
        ConfigError: on an unknown name (the message lists the valid ones), on arguments the loss
            does not take, on arguments contradicting the name, or on invalid values.
    """
    key = loss_key(name)
    cls, fixed = _REGISTRY[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Loss {key!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted) or 'nothing'}."
        )
    clashing = sorted(k for k in fixed if k in kwargs and kwargs[k] != fixed[k])
    if clashing:
        raise ConfigError(f"Loss {key!r} fixes {', '.join(f'{k}={fixed[k]!r}' for k in clashing)}.")
    loss = cls(model, **{**kwargs, **fixed})
    if matryoshka_dims is not None:
        return MatryoshkaLoss(model, loss, matryoshka_dims, matryoshka_weights)
    if matryoshka_weights is not None:
        raise ConfigError("matryoshka_weights given without matryoshka_dims.")
    return loss


__all__ = [
    "LOSS_NAMES",
    "CachedInfoNCELoss",
    "CoSENTLoss",
    "CosineMSELoss",
    "InfoNCELoss",
    "MatryoshkaLoss",
    "TripletLoss",
    "get_loss",
    "infonce_from_embeddings",
    "loss_key",
]
