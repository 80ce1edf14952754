"""InfoNCE in Triton with an online softmax: the ``[B, N]`` logit matrix is never stored.

Forward: one program per ``BLOCK_M`` anchors walks the candidates in ``BLOCK_N`` tiles, computing
the logit tile ``S = scale * Q D^T`` (K loop over D) and keeping a running row max ``m``, running
sum ``l = sum exp(S - m)`` and the positive logit (the diagonal entry, picked when its tile passes).
It stores ``lse = m + log l`` and ``pos`` per anchor (fp32 ``[B]`` each); the loss is ``mean(lse - pos)``.

Backward (flash-attention style, logits recomputed from q, d and the saved ``lse``):
``_infonce_bwd_dq_kernel`` on an (anchor tile, D chunk) grid and ``_infonce_bwd_dd_kernel`` on a
(candidate tile, D chunk) grid. Each recomputes its logit tiles over the full D, so the cost is
about ``(1 + 2 * D / BLOCK_DO)`` forward GEMMs; memory stays O((B + N) * D).

Dot operands are cast to ``DOT_DTYPE``: the input dtype on a GPU (fp32 with IEEE precision), fp32
when interpreted (``UPCAST_DOTS``; the interpreter's bf16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._util import block_size

INTERPRETED = bool(triton.knobs.runtime.interpret)
UPCAST_DOTS = INTERPRETED

_TL_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


# Reductions go through tl.reduce with combine functions defined here, and zeros through tl.full,
# not tl.sum / tl.max / tl.zeros: those are @triton.jit functions of triton.language itself, built
# as compiled or interpreted when triton is first imported, so they break interpreted kernels in a
# process that imported triton before TRITON_INTERPRET was set (builtins like tl.full are fine).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _logit_tile(a_ptr, b_ptr, ra, rb, a_ok, b_ok, D, stride_a, stride_b, scale,
                DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
                BLOCK_K: tl.constexpr):  # fmt: skip
    """scale * A[ra, :] @ B[rb, :]^T as an fp32 (BLOCK_A, BLOCK_B) tile (masked rows give 0)."""
    s = tl.full((BLOCK_A, BLOCK_B), 0.0, tl.float32)
    for k0 in range(0, D, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < D
        a = tl.load(a_ptr + ra[:, None] * stride_a + rk[None, :], mask=a_ok[:, None] & k_ok[None, :],
                    other=0.0)  # fmt: skip
        b = tl.load(b_ptr + rb[:, None] * stride_b + rk[None, :], mask=b_ok[:, None] & k_ok[None, :],
                    other=0.0)  # fmt: skip
        if IEEE:
            s = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), s, input_precision="ieee")
        else:
            s = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), s)
    return s * scale


@triton.jit
def _infonce_fwd_kernel(q_ptr, d_ptr, lse_ptr, pos_ptr, B, N, D, stride_q, stride_d, scale,
                        DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """lse[i] = logsumexp_j S[i, j] and pos[i] = S[i, i] for the BLOCK_M anchors of this program."""
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    m_ok = rm < B
    m_run = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_run = tl.full((BLOCK_M,), 0.0, tl.float32)
    pos = tl.full((BLOCK_M,), 0.0, tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = rn < N
        s = _logit_tile(q_ptr, d_ptr, rm, rn, m_ok, n_ok, D, stride_q, stride_d, scale,
                        DOT_DTYPE, IEEE, BLOCK_M, BLOCK_N, BLOCK_K)  # fmt: skip
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_run, tl.reduce(s, 1, _max))  # every tile has >= 1 valid column: finite
        l_run = l_run * tl.exp(m_run - m_new) + tl.reduce(tl.exp(s - m_new[:, None]), 1, _add)
        m_run = m_new
        pos += tl.reduce(tl.where(rn[None, :] == rm[:, None], s, 0.0), 1, _add)
    tl.store(lse_ptr + rm, m_run + tl.log(l_run), mask=m_ok)
    tl.store(pos_ptr + rm, pos, mask=m_ok)


@triton.jit
def _infonce_bwd_dq_kernel(q_ptr, d_ptr, lse_ptr, g_ptr, dq_ptr, B, N, D, stride_q, stride_d, stride_dq,
                           scale, inv_b, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DO: tl.constexpr):  # fmt: skip
    """dq[i, cols] = (g * scale / B) * sum_j (softmax(S)[i, j] - [i == j]) d[j, cols]."""
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    m_ok = rm < B
    c_ok = cols < D
    lse = tl.load(lse_ptr + rm, mask=m_ok, other=0.0)
    coef = tl.load(g_ptr).to(tl.float32) * scale * inv_b
    acc = tl.full((BLOCK_M, BLOCK_DO), 0.0, tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = rn < N
        s = _logit_tile(q_ptr, d_ptr, rm, rn, m_ok, n_ok, D, stride_q, stride_d, scale,
                        DOT_DTYPE, IEEE, BLOCK_M, BLOCK_N, BLOCK_K)  # fmt: skip
        p = tl.where(m_ok[:, None] & n_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        g = (p - tl.where(rn[None, :] == rm[:, None], 1.0, 0.0)) * coef
        dt = tl.load(d_ptr + rn[:, None] * stride_d + cols[None, :], mask=n_ok[:, None] & c_ok[None, :],
                     other=0.0)  # fmt: skip
        if IEEE:
            acc = tl.dot(g.to(DOT_DTYPE), dt.to(DOT_DTYPE), acc, input_precision="ieee")
        else:
            acc = tl.dot(g.to(DOT_DTYPE), dt.to(DOT_DTYPE), acc)
    tl.store(dq_ptr + rm[:, None] * stride_dq + cols[None, :], acc.to(dq_ptr.dtype.element_ty),
             mask=m_ok[:, None] & c_ok[None, :])  # fmt: skip


@triton.jit
def _infonce_bwd_dd_kernel(q_ptr, d_ptr, lse_ptr, g_ptr, dd_ptr, B, N, D, stride_q, stride_d, stride_dd,
                           scale, inv_b, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DO: tl.constexpr):  # fmt: skip
    """dd[j, cols] = (g * scale / B) * sum_i (softmax(S)[i, j] - [i == j]) q[i, cols]."""
    rn = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)
    n_ok = rn < N
    c_ok = cols < D
    coef = tl.load(g_ptr).to(tl.float32) * scale * inv_b
    acc = tl.full((BLOCK_N, BLOCK_DO), 0.0, tl.float32)
    for m0 in range(0, B, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = rm < B
        s_t = _logit_tile(d_ptr, q_ptr, rn, rm, n_ok, m_ok, D, stride_d, stride_q, scale,
                          DOT_DTYPE, IEEE, BLOCK_N, BLOCK_M, BLOCK_K)  # fmt: skip
        lse = tl.load(lse_ptr + rm, mask=m_ok, other=0.0)
        ok = n_ok[:, None] & m_ok[None, :]
        p_t = tl.where(ok, tl.exp(s_t - lse[None, :]), 0.0)
        g_t = (p_t - tl.where(ok & (rn[:, None] == rm[None, :]), 1.0, 0.0)) * coef
        qt = tl.load(q_ptr + rm[:, None] * stride_q + cols[None, :], mask=m_ok[:, None] & c_ok[None, :],
                     other=0.0)  # fmt: skip
        if IEEE:
            acc = tl.dot(g_t.to(DOT_DTYPE), qt.to(DOT_DTYPE), acc, input_precision="ieee")
        else:
            acc = tl.dot(g_t.to(DOT_DTYPE), qt.to(DOT_DTYPE), acc)
    tl.store(dd_ptr + rn[:, None] * stride_dd + cols[None, :], acc.to(dd_ptr.dtype.element_ty),
             mask=n_ok[:, None] & c_ok[None, :])  # fmt: skip


def _settings(q: torch.Tensor, b: int, n: int, dim: int) -> dict:
    dot = tl.float32 if UPCAST_DOTS else _TL_DTYPE[q.dtype]
    if INTERPRETED:
        return dict(DOT_DTYPE=dot, IEEE=False, BLOCK_M=block_size(b, 16, 32), BLOCK_N=block_size(n, 16, 32),
                    BLOCK_K=block_size(dim, 16, 128), BLOCK_DO=block_size(dim, 16, 128))  # fmt: skip
    fp32 = dot == tl.float32
    return dict(DOT_DTYPE=dot, IEEE=fp32, BLOCK_M=block_size(b, 16, 64), BLOCK_N=block_size(n, 16, 64),
                BLOCK_K=block_size(dim, 16, 32 if fp32 else 64), BLOCK_DO=block_size(dim, 16, 128),
                num_warps=4)  # fmt: skip


def info_nce_forward(q, d, scale):
    """q ``[B, D]``, d ``[N, D]`` (unit column stride) -> (lse fp32 ``[B]``, pos fp32 ``[B]``)."""
    b, dim = q.shape
    n = d.shape[0]
    cfg = _settings(q, b, n, dim)
    cfg.pop("BLOCK_DO")
    lse = torch.empty(b, device=q.device, dtype=torch.float32)
    pos = torch.empty_like(lse)
    grid = (triton.cdiv(b, cfg["BLOCK_M"]),)
    _infonce_fwd_kernel[grid](q, d, lse, pos, b, n, dim, q.stride(0), d.stride(0), float(scale), **cfg)
    return lse, pos


def info_nce_backward(grad, q, d, lse, scale, need_q, need_d):
    """grad: 0-d loss gradient (stays on device) -> (dq like q or None, dd like d or None)."""
    b, dim = q.shape
    n = d.shape[0]
    cfg = _settings(q, b, n, dim)
    g = grad.reshape(1).float()
    dq = dd = None
    if need_q:
        dq = torch.empty_like(q)
        grid = (triton.cdiv(b, cfg["BLOCK_M"]), triton.cdiv(dim, cfg["BLOCK_DO"]))
        _infonce_bwd_dq_kernel[grid](q, d, lse, g, dq, b, n, dim, q.stride(0), d.stride(0), dq.stride(0),
                                     float(scale), 1.0 / b, **cfg)  # fmt: skip
    if need_d:
        dd = torch.empty_like(d)
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(dim, cfg["BLOCK_DO"]))
        _infonce_bwd_dd_kernel[grid](q, d, lse, g, dd, b, n, dim, q.stride(0), d.stride(0), dd.stride(0),
                                     float(scale), 1.0 / b, **cfg)  # fmt: skip
    return dq, dd


class InfoNCEFunction(torch.autograd.Function):
    """Autograd for ``L = (1/B) sum_i (lse_i - S_ii)``, ``S = scale * q d^T``, ``lse_i = logsumexp_j S_ij``.

    Derivation: ``dL/dS_ij = (softmax(S)_ij - [i == j]) / B =: G_ij`` and ``S`` is bilinear, so
    ``dL/dq = scale * G d`` and ``dL/dd = scale * G^T q``; both are multiplied by the incoming scalar
    gradient. ``softmax(S)_ij = exp(S_ij - lse_i)`` is recomputed tile by tile from the saved fp32 ``lse``.
    Saved: q, d, lse ``[B]``.
    """

    @staticmethod
    def forward(ctx, q, d, scale):
        q2 = q if q.stride(1) == 1 else q.contiguous()
        d2 = d if d.stride(1) == 1 else d.contiguous()
        lse, pos = info_nce_forward(q2, d2, scale)
        ctx.save_for_backward(q2, d2, lse)
        ctx.scale = scale
        return (lse - pos).mean()

    @staticmethod
    def backward(ctx, grad):
        q, d, lse = ctx.saved_tensors
        dq, dd = info_nce_backward(grad, q, d, lse, ctx.scale, *ctx.needs_input_grad[:2])
        return dq, dd, None


def info_nce(q, d, scale=20.0):
    """Triton twin of :func:`..reference.info_nce` (same arguments and result)."""
    return InfoNCEFunction.apply(q, d, float(scale))
