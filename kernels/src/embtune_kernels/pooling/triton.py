"""Packed-sequence pooling (+ optional L2 normalisation) in Triton.

Sequence ``b`` is rows ``starts[b]:ends[b]`` of ``hidden``; packed input passes ``cu[:-1]``, ``cu[1:]``,
a padded ``[B, L, H]`` batch viewed as ``[B * L, H]`` passes each row's run of real tokens.

Forward: ``_pool_fwd_kernel`` on a (sequence, H-chunk) grid reads only the rows it needs (a mean
loops over the sequence in ``BLOCK_T``-row tiles) and writes fp32 ``p [B, H]``; if normalising,
``_l2norm_fwd_kernel`` (one program per sequence, whole row) writes ``y = p / max(||p||, eps)``.
Backward mirrors it: ``_l2norm_bwd_kernel`` turns ``dy`` into ``dp``, ``_pool_bwd_kernel`` scatters
``dp`` back to the token rows (``dp / len`` to every row for mean, to one row for cls/last).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._util import block_size, next_power_of_2
from .reference import MODES

INTERPRETED = bool(triton.knobs.runtime.interpret)


# Reductions go through tl.reduce with combine functions defined here, and zeros through tl.full,
# not tl.sum / tl.max / tl.zeros: those are @triton.jit functions of triton.language itself, built
# as compiled or interpreted when triton is first imported, so they break interpreted kernels in a
# process that imported triton before TRITON_INTERPRET was set (builtins like tl.full are fine).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _pool_fwd_kernel(h_ptr, start_ptr, end_ptr, p_ptr, H, stride_h, MODE: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    """p[b, cols] = mean / first / last of rows starts[b]:ends[b] of h (fp32)."""
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = cols < H
    start = tl.load(start_ptr + b).to(tl.int64)
    end = tl.load(end_ptr + b).to(tl.int64)
    if MODE == 0:
        acc = tl.full((BLOCK_T, BLOCK_H), 0.0, tl.float32)
        for t0 in range(start, end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            m = (rows < end)[:, None] & ok[None, :]
            acc += tl.load(h_ptr + rows[:, None] * stride_h + cols[None, :], mask=m, other=0.0).to(tl.float32)
        p = tl.reduce(acc, 0, _add) / tl.maximum(end - start, 1).to(tl.float32)
    elif MODE == 1:
        p = tl.load(h_ptr + start * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
    else:
        p = tl.load(h_ptr + (end - 1) * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(p_ptr + b * H + cols, p, mask=ok)


@triton.jit
def _pool_bwd_kernel(dp_ptr, start_ptr, end_ptr, dh_ptr, H, stride_dh, MODE: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    """dh[rows of b, cols] = dp[b, cols] / len (mean), or dp into the first / last row (cls / last)."""
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = cols < H
    start = tl.load(start_ptr + b).to(tl.int64)
    end = tl.load(end_ptr + b).to(tl.int64)
    dp = tl.load(dp_ptr + b * H + cols, mask=ok, other=0.0)
    out_ty = dh_ptr.dtype.element_ty
    if MODE == 0:
        g = (dp / tl.maximum(end - start, 1).to(tl.float32)).to(out_ty)
        for t0 in range(start, end, BLOCK_T):
            rows = t0 + tl.arange(0, BLOCK_T)
            m = (rows < end)[:, None] & ok[None, :]
            tile = tl.broadcast_to(g[None, :], (BLOCK_T, BLOCK_H))
            tl.store(dh_ptr + rows[:, None] * stride_dh + cols[None, :], tile, mask=m)
    elif MODE == 1:
        tl.store(dh_ptr + start * stride_dh + cols, dp.to(out_ty), mask=ok)
    else:
        tl.store(dh_ptr + (end - 1) * stride_dh + cols, dp.to(out_ty), mask=ok)


@triton.jit
def _l2norm_fwd_kernel(p_ptr, y_ptr, norm_ptr, H, eps, BLOCK_H: tl.constexpr):
    """y[b] = p[b] / max(||p[b]||, eps); norm[b] = ||p[b]|| (fp32)."""
    b = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    ok = cols < H
    p = tl.load(p_ptr + b * H + cols, mask=ok, other=0.0)
    norm = tl.sqrt(tl.reduce(p * p, 0, _add))
    tl.store(y_ptr + b * H + cols, (p / tl.maximum(norm, eps)).to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(norm_ptr + b, norm)


@triton.jit
def _l2norm_bwd_kernel(p_ptr, norm_ptr, dy_ptr, dp_ptr, H, stride_dy, eps, BLOCK_H: tl.constexpr):
    """dp = (dy - y (y . dy)) / ||p|| where ||p|| > eps, else dy / eps (the clamp is flat there)."""
    b = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    ok = cols < H
    p = tl.load(p_ptr + b * H + cols, mask=ok, other=0.0)
    dy = tl.load(dy_ptr + b * stride_dy + cols, mask=ok, other=0.0).to(tl.float32)
    norm = tl.load(norm_ptr + b)
    if norm > eps:
        y = p / norm
        dp = (dy - y * tl.reduce(y * dy, 0, _add)) / norm
    else:
        dp = dy / eps
    tl.store(dp_ptr + b * H + cols, dp, mask=ok)


def _grid_h(n_seq: int, hdim: int) -> tuple[tuple[int, int], int, int]:
    bh = block_size(hdim, 16, 256 if INTERPRETED else 128)
    bt = 16 if INTERPRETED else 32
    return (n_seq, triton.cdiv(hdim, bh)), bt, bh


def pool_forward(hidden, starts, ends, mode, normalize, eps):
    """hidden ``[R, H]`` (unit column stride), starts/ends ``[B]`` -> (y ``[B, H]`` in hidden.dtype,
    p fp32, norm fp32 or None)."""
    n_seq, hdim = starts.numel(), hidden.shape[1]
    p = torch.empty(n_seq, hdim, device=hidden.device, dtype=torch.float32)
    grid, bt, bh = _grid_h(n_seq, hdim)
    _pool_fwd_kernel[grid](hidden, starts, ends, p, hdim, hidden.stride(0), MODE=MODES[mode], BLOCK_T=bt,
                           BLOCK_H=bh)  # fmt: skip
    if not normalize:
        return p.to(hidden.dtype), p, None
    y = torch.empty(n_seq, hdim, device=hidden.device, dtype=hidden.dtype)
    norm = torch.empty(n_seq, device=hidden.device, dtype=torch.float32)
    _l2norm_fwd_kernel[(n_seq,)](p, y, norm, hdim, float(eps), BLOCK_H=next_power_of_2(hdim))
    return y, p, norm


def pool_backward(dy, starts, ends, p, norm, n_rows, mode, eps, dtype):
    """dy ``[B, H]`` -> dhidden ``[n_rows, H]`` in ``dtype`` (rows outside every sequence get zeros)."""
    n_seq, hdim = p.shape
    if norm is not None:
        dp = torch.empty_like(p)
        block = next_power_of_2(hdim)
        _l2norm_bwd_kernel[(n_seq,)](p, norm, dy, dp, hdim, dy.stride(0), float(eps), BLOCK_H=block)
    else:
        dp = dy.float().contiguous()
    dh = torch.zeros(n_rows, hdim, device=p.device, dtype=dtype)
    grid, bt, bh = _grid_h(n_seq, hdim)
    _pool_bwd_kernel[grid](dp, starts, ends, dh, hdim, dh.stride(0), MODE=MODES[mode], BLOCK_T=bt, BLOCK_H=bh)
    return dh


class PoolFunction(torch.autograd.Function):
    """Autograd for ``y_b = normalize(pool_b(h))``, sequence ``b`` being rows ``starts[b]:ends[b]``.

    Derivation: pooling is linear, so ``dh_t = dp_b / len_b`` for every row ``t`` of sequence ``b``
    (mean), ``dh = dp_b`` at row ``starts[b]`` (cls) or ``ends[b] - 1`` (last), zero elsewhere. With
    ``y = p / n``, ``n = ||p||``: ``dy/dp = (I - y y^T) / n``, so ``dp = (dy - y (y . dy)) / n``; where
    ``n <= eps`` the denominator is the constant eps and ``dp = dy / eps``.
    Saved: fp32 ``p [B, H]`` and ``||p|| [B]`` (never the token-sized input).
    """

    @staticmethod
    def forward(ctx, hidden, starts, ends, mode, normalize, eps):
        hidden2 = hidden if hidden.stride(1) == 1 else hidden.contiguous()
        y, p, norm = pool_forward(hidden2, starts, ends, mode, normalize, eps)
        ctx.save_for_backward(starts, ends, p, norm)
        ctx.mode, ctx.eps, ctx.n_rows, ctx.dtype = mode, eps, hidden.shape[0], hidden.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        starts, ends, p, norm = ctx.saved_tensors
        dh = pool_backward(dy.contiguous(), starts, ends, p, norm, ctx.n_rows, ctx.mode, ctx.eps, ctx.dtype)
        return dh, None, None, None, None, None


def pool(hidden, cu_seqlens, mode="mean", normalize=False, eps=1e-12):
    """Triton twin of :func:`..reference.pool` (same arguments and result)."""
    return PoolFunction.apply(hidden, cu_seqlens[:-1], cu_seqlens[1:], mode, bool(normalize), float(eps))


def pool_spans(hidden, starts, ends, mode="mean", normalize=False, eps=1e-12):
    """Triton twin of :func:`..reference.pool_spans` (same arguments and result)."""
    return PoolFunction.apply(hidden, starts, ends, mode, bool(normalize), float(eps))
