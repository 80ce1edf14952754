"""Helpers shared by the embtune losses: embedding the input columns, checking them, truncating them.

Nothing here is specific to one loss. The helpers raise :class:`embtune.errors.ConfigError` for
mistakes a user can make by pairing a loss with data of the wrong shape (too few columns, no label
column), and let programming errors surface as ordinary exceptions.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embtune.errors import ConfigError


def embed_columns(model: nn.Module, sentence_features: Iterable[dict[str, Any]]) -> list[Tensor]:
    """Embed each input column with one forward pass of ``model``.

    Args:
        model: a ``SentenceTransformer`` (or a wrapper of one, e.g. DDP) whose output dict holds
            ``"sentence_embedding"``.
        sentence_features: one feature dict per column, as the SentenceTransformerTrainer hands them
            to a loss (``input_ids``, ``attention_mask``, ...).

    Returns:
        One ``(batch_size, dim)`` embedding tensor per column, in column order.
    """
    return [model(features)["sentence_embedding"] for features in sentence_features]


def upcast(tensor: Tensor) -> Tensor:
    """Return ``tensor`` as float32 when it is float16/bfloat16, unchanged otherwise.

    Similarities and softmaxes over a batch are computed in at least fp32, as sentence-transformers does.
    """
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def truncate_embeddings(embeddings: Tensor, dim: int) -> Tensor:
    """Keep the first ``dim`` features of each embedding and rescale them to unit L2 norm.

    Args:
        embeddings: ``(..., full_dim)`` tensor.
        dim: the Matryoshka dimension to keep, ``1 <= dim <= full_dim``.

    Returns:
        ``(..., dim)`` tensor of unit-norm rows (differentiable).

    Raises:
        ConfigError: if ``dim`` exceeds the embedding size.
    """
    full_dim = embeddings.shape[-1]
    if dim > full_dim:
        raise ConfigError(f"Matryoshka dimension {dim} is larger than the model's embedding size {full_dim}.")
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


def check_columns(
    loss_name: str,
    embeddings: list[Tensor],
    *,
    minimum: int | None = None,
    exactly: int | None = None,
    layout: str = "",
) -> int:
    """Check the number of columns and that every column has the same number of rows.

    Args:
        loss_name: class name used in the error message.
        embeddings: one ``(batch_size, dim)`` tensor per input column.
        minimum: the least number of columns accepted.
        exactly: the only number of columns accepted.
        layout: human description of the expected columns, e.g. ``"(anchor, positive, negative)"``.

    Returns:
        The batch size (rows per column).

    Raises:
        ConfigError: on a wrong column count or ragged columns.
    """
    count = len(embeddings)
    if (exactly is not None and count != exactly) or (minimum is not None and count < minimum):
        wanted = f"exactly {exactly}" if exactly is not None else f"at least {minimum}"
        raise ConfigError(f"{loss_name} needs {wanted} input columns {layout}, got {count}.")
    rows = {int(embedding.shape[0]) for embedding in embeddings}
    if len(rows) != 1:
        raise ConfigError(
            f"{loss_name} needs every input column to have the same number of rows, got {sorted(rows)}."
        )
    return rows.pop()


def check_labels(loss_name: str, labels: Tensor | None, batch_size: int) -> Tensor:
    """Check that there is one float label per row and return them as a flat float tensor.

    Args:
        loss_name: class name used in the error message.
        labels: the label tensor handed to the loss, or None when the dataset had no label column.
        batch_size: expected number of labels.

    Returns:
        ``(batch_size,)`` tensor of labels (float dtype; bool and int labels are converted).

    Raises:
        ConfigError: when the labels are missing or their count differs from the batch size.
    """
    if labels is None:
        raise ConfigError(
            f"{loss_name} needs a float label per pair (a 'label' or 'score' column), but the batch has none."
        )
    if labels.numel() != batch_size:
        raise ConfigError(
            f"{loss_name} expects {batch_size} labels (one per pair), got {labels.numel()} "
            f"with shape {tuple(labels.shape)}."
        )
    labels = labels.reshape(-1)
    if not labels.is_floating_point():
        labels = labels.float()
    return labels
