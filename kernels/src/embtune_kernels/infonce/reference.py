"""InfoNCE (in-batch negatives + hard negatives) in plain PyTorch (CPU path and test oracle).

``logits[i, j] = scale * <q_i, d_j>`` in fp32 (fp64 stays fp64), positive of anchor ``i`` at column
``i``; loss is the mean cross-entropy over anchors. This version materialises the ``[B, N]`` logit matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

INTERPRETED = False  # dispatch reads this on every backend module; only meaningful for triton.py


def info_nce(q: torch.Tensor, d: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """q ``[B, D]`` anchors, d ``[N, D]`` candidates (N >= B, d[i] is q[i]'s positive), scale ->
    scalar fp32 (fp64 for fp64 inputs) loss ``mean_i(logsumexp_j(scale q_i.d_j) - scale q_i.d_i)``."""
    acc = torch.promote_types(q.dtype, torch.float32)
    logits = (q.to(acc) @ d.to(acc).T) * scale
    target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, target)
