"""Attention as two batched matmuls with a hand-written backward (the AMX-friendly CPU path).

PyTorch's CPU flash-attention kernel runs far below the CPU's matmul rate (on a 2-core AMX Xeon,
~40 GFLOP/s against 3.2 TFLOP/s for a bf16 matmul), because it works on small tiles. Here the
attention of a padded block ``[n, H, L, D]`` is computed as

    S = (q * scaling) @ kᵀ          one batched matmul in the compute dtype (bf16 on AMX: oneDNN)
    P = softmax(S + mask)           fp32
    O = dropout(P) @ v              one batched matmul in the compute dtype

and :class:`MatmulAttention` writes the backward by hand instead of letting autograd keep every
intermediate:

    dv = Pdᵀ @ dO,   dPd = dO @ vᵀ,   dS = P * (dP - rowsum(dO * O)),   dq = dS @ k * scaling,   dk = dSᵀ @ q_s

(``Pd`` is P after dropout, ``dP`` is ``dPd`` through the same dropout mask; ``rowsum(dO * O)`` equals
``rowsum(dP * P)`` and costs ``L * D`` instead of ``L * L`` per row). Two ways to get P back:

* ``recompute=False``: P is saved from the forward (in the compute dtype): one ``[n, H, L, L]`` tensor
  per layer, no extra matmul.
* ``recompute=True``: only q, k, v and the row log-sum-exp are saved; the backward recomputes
  ``S = q_s @ kᵀ`` and ``P = exp(S + mask - lse)`` (one extra matmul, far less memory).

Grouped-query attention (``Hkv < H``) never copies k/v: the ``g = H / Hkv`` query heads that share a
key head are laid out as ``g * L`` rows of one matmul, so dk/dv sum over the group for free.
Scores are rounded to the compute dtype by the matmul (bf16 keeps 8 bits of mantissa; the softmax and
its backward run in fp32), which is why bf16 results are compared at bf16 tolerance in the tests.
"""
from __future__ import annotations

import torch


def _grouped(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[n, H, L, D]`` → ``[n, Hkv, g * L, D]`` (the g query heads of one key head stacked as rows)."""
    n, heads, length, dim = x.shape
    return x.reshape(n, kv_heads, (heads // kv_heads) * length, dim)


def _scores(q_s: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[n, H, L, L]`` scores in at least fp32: ``q_s @ kᵀ + mask`` (mask additive, broadcastable to that shape)."""
    n, heads, length, _ = q_s.shape
    scores = torch.matmul(_grouped(q_s, k.shape[1]), k.transpose(-1, -2)).view(n, heads, length, k.shape[2])
    acc = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(acc) if scores.dtype != acc else scores
    return scores.add_(mask) if mask is not None else scores


class MatmulAttention(torch.autograd.Function):
    """Autograd node for matmul attention (see the module docstring).

    Forward in: ``q [n, H, L, D]``, ``k``/``v [n, Hkv, L, D]``, ``mask`` (additive float mask
    broadcastable to ``[n, H, L, L]`` with ``-inf`` where attention is not allowed, or None; every row
    must allow at least one key), ``scaling``, ``keep`` (bool dropout keep-mask broadcastable to the
    scores, or None), ``dropout`` (the probability the keep-mask was drawn with), ``compute`` (dtype
    of the two matmuls), ``recompute`` (bool). Out: ``[n, H, L, D]`` in q's dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, scaling, keep, dropout, compute, recompute):  # noqa: D102
        in_dtype = q.dtype
        q_s, k_c, v_c = (q * scaling).to(compute), k.to(compute), v.to(compute)
        n, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        scores = _scores(q_s, k_c, mask)
        lse = torch.logsumexp(scores, -1, keepdim=True) if recompute else None
        probs = scores.softmax(-1)
        del scores
        dropped = probs.mul(keep).mul_(1.0 / (1.0 - dropout)) if keep is not None else probs
        out = torch.matmul(_grouped(dropped.to(compute), kv_heads).view(n, kv_heads, -1, k.shape[2]), v_c)
        out = out.view(n, heads, length, dim)
        saved_probs = None if recompute else probs.to(compute)
        ctx.save_for_backward(q_s, k_c, v_c, out, mask, keep, saved_probs, lse)
        ctx.scaling, ctx.dropout, ctx.in_dtypes = scaling, dropout, (in_dtype, k.dtype, v.dtype)
        return out.to(in_dtype)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        q_s, k_c, v_c, out, mask, keep, probs, lse = ctx.saved_tensors
        compute = q_s.dtype
        acc = torch.promote_types(compute, torch.float32)
        n, heads, length, dim = q_s.shape
        kv_heads, keys = k_c.shape[1], k_c.shape[2]
        if probs is None:  # recompute P from the saved row log-sum-exp
            probs = _scores(q_s, k_c, mask).sub_(lse).exp_()
        else:
            probs = probs.to(acc)
        dropped = probs.mul(keep).mul_(1.0 / (1.0 - ctx.dropout)) if keep is not None else probs
        d_out = grad_out.to(compute)
        d_out_g = _grouped(d_out, kv_heads)
        grad_v = torch.matmul(_grouped(dropped.to(compute), kv_heads).view(n, kv_heads, -1, keys).transpose(-1, -2),
                              d_out_g)
        d_probs = torch.matmul(d_out_g, v_c.transpose(-1, -2)).view(n, heads, length, keys).to(acc)
        if keep is not None:
            d_probs.mul_(keep).mul_(1.0 / (1.0 - ctx.dropout))
        row = (grad_out.to(acc) * out.to(acc)).sum(-1, keepdim=True)
        d_scores = d_probs.sub_(row).mul_(probs).to(compute)
        d_scores_g = _grouped(d_scores, kv_heads).view(n, kv_heads, -1, keys)
        grad_q = torch.matmul(d_scores_g, k_c).view(n, heads, length, dim).mul_(ctx.scaling)
        grad_k = torch.matmul(d_scores_g.transpose(-1, -2), _grouped(q_s, kv_heads))
        q_dtype, k_dtype, v_dtype = ctx.in_dtypes
        return (grad_q.to(q_dtype), grad_k.to(k_dtype), grad_v.to(v_dtype), None, None, None, None, None, None)


def matmul_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, *,
                     scaling: float, dropout: float = 0.0, compute: torch.dtype | None = None,
                     recompute: bool = False, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over a padded block as batched matmuls with a hand-written backward.

    In: ``query [n, H, L, D]``, ``key``/``value [n, Hkv, L, D]`` (``H`` a multiple of ``Hkv``), ``mask``
    (bool, True = may attend, broadcastable to ``[n, H, L, L]``; or None), ``scaling``, ``dropout``
    probability on the attention weights (applied only when > 0; ``keep`` may pass the keep-mask to
    use instead of drawing one), ``compute`` dtype of the matmuls (default: the query's), ``recompute``
    (recompute the probabilities in the backward instead of saving them).
    Out: ``[n, H, L, D]`` in the query's dtype.
    """
    compute = compute or query.dtype
    additive = None
    if mask is not None:
        acc = torch.promote_types(compute, torch.float32)
        additive = torch.zeros(mask.shape, dtype=acc, device=query.device).masked_fill_(~mask, float("-inf"))
    if dropout > 0 and keep is None:
        n, heads, length, _ = query.shape
        keep = torch.rand(n, heads, length, key.shape[2], device=query.device) >= dropout
    if dropout <= 0:
        keep = None
    return MatmulAttention.apply(query, key, value, additive, scaling, keep, dropout, compute, recompute)


__all__ = ["MatmulAttention", "matmul_attention"]
