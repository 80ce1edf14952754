"""InfoNCE with in-batch negatives and optional hard negatives (a.k.a. MultipleNegativesRankingLoss).

The math lives in the pure function :func:`infonce_from_embeddings`, which only sees embedding
tensors, so that a fused kernel can replace it without touching the loss classes: on CUDA (kernel
dispatch "auto", see ``embtune_kernels.dispatch``) the full-batch loss runs ``embtune_kernels.info_nce``
(online softmax, the ``B x N`` logits are never stored) on the normalised fp32 embeddings; on CPU, for
row chunks (``rows``) and under ``EMBTUNE_KERNELS=torch`` it is the PyTorch code below. Under multi-process
training the loss gathers every process's embeddings first (see :mod:`embtune.losses.gather`)
and :func:`gathered_infonce` computes this process's rows against the global batch.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import embtune_kernels
import torch
import torch.nn.functional as F
from embtune_kernels import dispatch
from torch import Tensor, nn

from embtune.errors import ConfigError
from embtune.losses._common import check_columns, embed_columns, upcast
from embtune.losses.gather import GatheredBatch, gather_columns, gathering_active


def infonce_from_embeddings(
    anchors: Tensor,
    candidates: Tensor,
    scale: float = 20.0,
    symmetric: bool = False,
    rows: tuple[int, int] | None = None,
) -> Tensor:
    """InfoNCE over cosine similarities, with every candidate of the batch as a negative.

    Let ``B = len(anchors)``. ``candidates`` stacks the positive column then the hard-negative
    columns, ``[p_0..p_{B-1}, n1_0..n1_{B-1}, ..., nk_0..nk_{B-1}]``, so the positive of anchor ``i``
    is ``candidates[i]``. With ``s(x, y) = scale * cos(x, y)``, the per-row losses are

    * forward (anchor -> candidates): ``f_i = logsumexp_j s(a_i, c_j) - s(a_i, p_i)`` over all
      ``B * (1 + k)`` candidates (other rows' positives and all hard negatives are negatives);
    * backward (positive -> anchors), only when ``symmetric``: ``b_i = logsumexp_j s(p_i, a_j) -
      s(p_i, a_i)`` over the ``B`` anchors. Hard negatives never act as queries here.

    The row loss is ``f_i``, or ``(f_i + b_i) / 2`` when ``symmetric``.

    Args:
        anchors: ``(B, d)`` anchor (query) embeddings; need not be normalised.
        candidates: ``(B * (1 + k), d)`` positives followed by ``k`` hard-negative columns.
        scale: inverse temperature applied to the cosine similarities.
        symmetric: add the positive -> anchor direction and average the two.
        rows: ``(begin, end)`` to compute only anchors ``begin..end-1`` (used to chunk the loss);
            None for all rows.

    Returns:
        A scalar: the sum of the selected row losses divided by ``B``. Summing the results over
        chunks that cover ``0..B`` gives the batch mean, i.e. the full loss.

    Backend: the Triton kernel ``embtune_kernels.info_nce`` when :func:`uses_infonce_kernel` says so
    (CUDA tensors, all rows); otherwise the PyTorch code.
    """
    if uses_infonce_kernel(anchors, candidates, rows):
        return _kernel_infonce(anchors, candidates, scale, symmetric)
    anchors = upcast(anchors)
    candidates = upcast(candidates)
    batch_size = anchors.shape[0]
    if candidates.shape[0] % batch_size:
        raise ValueError(
            f"candidates has {candidates.shape[0]} rows, not a multiple of the {batch_size} anchors."
        )
    begin, end = (0, batch_size) if rows is None else rows
    anchors_n = F.normalize(anchors, p=2, dim=1)
    candidates_n = F.normalize(candidates, p=2, dim=1)
    targets = torch.arange(begin, end, device=anchors.device)

    logits = anchors_n[begin:end] @ candidates_n.T * scale  # (rows, B * (1 + k))
    row_losses = F.cross_entropy(logits, targets, reduction="none")
    if symmetric:
        back_logits = candidates_n[begin:end] @ anchors_n.T * scale  # (rows, B)
        row_losses = (row_losses + F.cross_entropy(back_logits, targets, reduction="none")) / 2
    return row_losses.sum() / batch_size


def uses_infonce_kernel(anchors: Tensor, candidates: Tensor, rows: tuple[int, int] | None = None) -> bool:
    """Whether :func:`infonce_from_embeddings` runs the ``embtune_kernels.info_nce`` kernel for these inputs.

    In: the function's ``anchors (B, d)``, ``candidates (N, d)`` and ``rows``. Out: True when all rows are
    asked for (the kernel has no row range), the shapes are the kernel's (``1 <= B <= N``, same ``d``)
    and the kernel dispatcher picks Triton for the tensors (mode "auto": both on CUDA; "torch": never;
    "triton": always, or an error saying why it cannot run). False means the PyTorch code runs.
    """
    if rows is not None or anchors.dim() != 2 or candidates.dim() != 2:
        return False
    if anchors.shape[1] != candidates.shape[1]:
        return False
    if not 1 <= anchors.shape[0] <= candidates.shape[0]:
        return False
    return dispatch.choose(anchors, candidates) == "triton"


def _kernel_infonce(anchors: Tensor, candidates: Tensor, scale: float, symmetric: bool) -> Tensor:
    """The full-batch loss of :func:`infonce_from_embeddings` through the Triton kernel: rows L2-normalised
    in (at least) fp32 by PyTorch, then ``embtune_kernels.info_nce`` (same symmetric definition: the
    positive -> anchors direction uses the ``B`` positives against the ``B`` anchors). Out: fp32 scalar."""
    if candidates.shape[0] % anchors.shape[0]:
        raise ValueError(
            f"candidates has {candidates.shape[0]} rows, not a multiple of the {anchors.shape[0]} anchors."
        )
    anchors_n = F.normalize(upcast(anchors), p=2, dim=1)
    candidates_n = F.normalize(upcast(candidates), p=2, dim=1)
    return embtune_kernels.info_nce(anchors_n, candidates_n, scale=scale, symmetric=symmetric)


def gathered_infonce(
    batch: GatheredBatch, scale: float = 20.0, symmetric: bool = False, rows: tuple[int, int] | None = None
) -> Tensor:
    """InfoNCE of this process's anchors against the gathered global batch: its share, scaled for averaging.

    In: ``batch`` from :func:`~embtune.losses.gather.gather_columns` (``[anchors, positives,
    negatives...]`` of every process); ``scale`` and ``symmetric`` as in
    :func:`infonce_from_embeddings`; ``rows``: ``(begin, end)`` among this process's rows (for
    chunking), None for all of them. The targets are this process's global row indices (its offset
    plus the local index), so candidates are laid out exactly as for a single process holding the
    concatenated batch.
    Out: the scalar ``world_size / total_rows * sum of the selected row losses``; summed over chunks
    it is this process's share of the global loss times the number of processes (the mean over its
    anchors when the shards are equal), so the mean over processes is the global-batch loss.
    """
    begin, end = (0, batch.local_rows) if rows is None else rows
    anchors, candidates = batch.columns[0], torch.cat(batch.columns[1:], dim=0)
    part = infonce_from_embeddings(anchors, candidates, scale=scale, symmetric=symmetric,
                                   rows=(batch.offset + begin, batch.offset + end))
    return part * batch.world_size


class InfoNCELoss(nn.Module):
    """Contrastive loss with in-batch negatives and any number of hard-negative columns.

    For each anchor, its positive must score higher (cosine similarity times ``scale``) than every
    other candidate in the batch: the other anchors' positives and every hard negative. The loss is
    the cross-entropy of that softmax, averaged over the batch. This is the loss that
    sentence-transformers calls ``MultipleNegativesRankingLoss`` with its default settings.

    With ``symmetric=True`` each row's loss is the mean of the anchor -> candidates term above and a
    positive -> anchors term (each positive must pick its own anchor among the batch's anchors; hard
    negatives take no part in that direction). This equals sentence-transformers'
    ``MultipleNegativesRankingLoss(directions=("query_to_doc", "doc_to_query"),
    partition_mode="per_direction")`` and the deprecated ``MultipleNegativesSymmetricRankingLoss``,
    hard negatives included. See :func:`infonce_from_embeddings` for the formula.

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

    Batches should not contain duplicate texts: a duplicate of a positive counts as a negative.

    Multi-process training: when ``torch.distributed`` is initialised with several processes (and
    ``gather_across_devices`` is True) the embeddings of all processes are gathered, so every anchor
    sees the whole global batch as negatives; the loss returned is this process's share (the mean
    over its anchors when every process has as many), and the mean over processes of the loss and of
    the parameter gradients equals the single-process loss and gradient on the concatenated batch
    (:mod:`embtune.losses.gather`).
    """

    needs_labels: bool = False

    def __init__(
        self,
        model: nn.Module,
        scale: float = 20.0,
        symmetric: bool = False,
        gather_across_devices: bool = True,
    ) -> None:
        """Build the loss.

        Args:
            model: the SentenceTransformer being trained.
            scale: inverse temperature (``scale = 1 / temperature``; 20 means temperature 0.05).
            symmetric: also train the positive -> anchor direction (see the class docstring).
            gather_across_devices: under multi-process training, use every process's rows as
                negatives (False: each process only its own). No effect in a single process.

        Raises:
            ConfigError: if ``scale`` is not positive.
        """
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"InfoNCE scale must be positive, got {scale}.")
        self.model = model
        self.scale = float(scale)
        self.symmetric = bool(symmetric)
        self.gather_across_devices = bool(gather_across_devices)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        """Embed every column and return the loss.

        Args:
            sentence_features: feature dicts for (anchor, positive, negative_1, ..., negative_k).
            labels: ignored (the positive of row ``i`` is row ``i`` of the positive column).

        Returns:
            The scalar loss.
        """
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        """Compute the loss from already computed embeddings.

        Args:
            embeddings: ``[anchors, positives, negatives_1, ..., negatives_k]``, each ``(B, d)``.
            labels: ignored.

        Returns:
            The scalar loss (mean over the ``B`` anchors; with several processes, this process's
            share against the gathered batch, see the class docstring).

        Raises:
            ConfigError: with fewer than two columns or columns of different lengths.
        """
        check_columns(type(self).__name__, embeddings, minimum=2, layout="(anchor, positive, negatives...)")
        if gathering_active(self.gather_across_devices):
            return gathered_infonce(gather_columns(embeddings), scale=self.scale, symmetric=self.symmetric)
        return infonce_from_embeddings(
            embeddings[0], torch.cat(embeddings[1:], dim=0), scale=self.scale, symmetric=self.symmetric
        )

    def get_config_dict(self) -> dict[str, Any]:
        """Return the hyperparameters (for model cards and logs)."""
        return {"scale": self.scale, "symmetric": self.symmetric, "similarity": "cosine",
                "gather_across_devices": self.gather_across_devices}

    @property
    def temperature(self) -> float:
        """The softmax temperature, ``1 / scale``."""
        return 1.0 / self.scale
