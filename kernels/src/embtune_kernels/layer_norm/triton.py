"""Fused residual-add + LayerNorm in Triton: one program per row forward, row chunks backward.

Forward writes ``h = x + r`` (rounded to ``x.dtype`` first, so LN normalises exactly the ``h`` it
returns, as the reference does), ``y``, and fp32 ``mean``/``rstd`` per row. Backward recomputes
``xhat`` from ``h`` and accumulates ``dweight``/``dbias`` as fp32 per-program partials that the host
sums (no atomics: deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._util import next_power_of_2

INTERPRETED = bool(triton.knobs.runtime.interpret)
MAX_H = 65536  # one row must fit in one program


# Reductions go through tl.reduce with combine functions defined here, and zeros through tl.full,
# not tl.sum / tl.max / tl.zeros: those are @triton.jit functions of triton.language itself, built
# as compiled or interpreted when triton is first imported, so they break interpreted kernels in a
# process that imported triton before TRITON_INTERPRET was set (builtins like tl.full are fine).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _layer_norm_fwd_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, h_ptr, mean_ptr, rstd_ptr,
    H, stride_x, stride_r, stride_y, stride_h, eps,
    HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Row ``i``: h = x + r; mean, var over H (fp32); y = (h - mean) * rstd * w + b."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    ok = cols < H
    h = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        # add in fp32, round once to x's dtype (what a bf16/fp16 add does; the interpreter's own
        # bf16 arithmetic is unreliable), and normalise the rounded sum that is returned
        h += tl.load(r_ptr + row * stride_r + cols, mask=ok, other=0.0).to(tl.float32)
        h = h.to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + row * stride_h + cols, h, mask=ok)
        h = h.to(tl.float32)
    mean = tl.reduce(h, 0, _add) / H
    diff = tl.where(ok, h - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.reduce(diff * diff, 0, _add) / H + eps)
    y = diff * rstd * tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _layer_norm_bwd_kernel(
    dy_ptr, dh_ptr, h_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr,
    n_rows, H, stride_dy, stride_dh, stride_h, stride_dx, rows_per_program,
    HAS_DH: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Rows [pid*rows_per_program, ...): dx = rstd * (w*dy - mean(w*dy) - xhat * mean(w*dy*xhat)) + dh;
    partial dw = sum dy*xhat and db = sum dy over those rows, written to row ``pid`` of dw/db."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    ok = cols < H
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    dw = tl.full((BLOCK_H,), 0.0, tl.float32)
    db = tl.full((BLOCK_H,), 0.0, tl.float32)
    # int64 bounds give an int64 loop variable on the GPU (it is a Python int when interpreted)
    start = pid.to(tl.int64) * rows_per_program
    stop = tl.minimum(start + rows_per_program, n_rows)
    for row64 in range(start, stop):
        h = tl.load(h_ptr + row64 * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row64 * stride_dy + cols, mask=ok, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row64)
        xhat = tl.where(ok, (h - tl.load(mean_ptr + row64)) * rstd, 0.0)
        wdy = w * dy
        c1 = tl.reduce(xhat * wdy, 0, _add) / H
        c2 = tl.reduce(wdy, 0, _add) / H
        dx = (wdy - (xhat * c1 + c2)) * rstd
        if HAS_DH:
            dx += tl.load(dh_ptr + row64 * stride_dh + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(dx_ptr + row64 * stride_dx + cols, dx.to(dx_ptr.dtype.element_ty), mask=ok)
        dw += dy * xhat
        db += dy
    tl.store(dw_ptr + pid * H + cols, dw, mask=ok)
    tl.store(db_ptr + pid * H + cols, db, mask=ok)


def _warps(block_h: int) -> int:
    return 1 if INTERPRETED else min(16, max(1, block_h // 256))


def layer_norm_forward(x, residual, weight, bias, eps):
    """x, residual ``[T, H]`` (residual may be None) -> (y, h or None, mean fp32 [T], rstd fp32 [T])."""
    t, hdim = x.shape
    if hdim > MAX_H:
        raise ValueError(f"hidden size {hdim} > {MAX_H} is not supported by the Triton LayerNorm")
    block = next_power_of_2(hdim)
    y = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else None
    mean = torch.empty(t, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if t:
        _layer_norm_fwd_kernel[(t,)](
            x, x if residual is None else residual, weight, weight if bias is None else bias, y,
            y if h is None else h, mean, rstd,
            hdim, x.stride(0), 0 if residual is None else residual.stride(0), y.stride(0),
            0 if h is None else h.stride(0), float(eps),
            HAS_RES=residual is not None, HAS_BIAS=bias is not None, BLOCK_H=block, num_warps=_warps(block),
        )  # fmt: skip
    return y, h, mean, rstd


def layer_norm_backward(dy, dh, h, weight, mean, rstd):
    """dy, dh (or None) ``[T, H]`` -> (dx ``[T, H]`` = grad of x and of residual, dw fp32, db fp32)."""
    t, hdim = h.shape
    block = next_power_of_2(hdim)
    if INTERPRETED:
        programs = min(t, 4)
    else:
        programs = min(t, 4 * torch.cuda.get_device_properties(h.device).multi_processor_count)
    programs = max(programs, 1)
    rows = triton.cdiv(t, programs)
    dx = torch.empty_like(h)
    dw = torch.zeros(programs, hdim, device=h.device, dtype=torch.float32)
    db = torch.zeros_like(dw)
    if t:
        _layer_norm_bwd_kernel[(programs,)](
            dy, dy if dh is None else dh, h, weight, mean, rstd, dx, dw, db,
            t, hdim, dy.stride(0), 0 if dh is None else dh.stride(0), h.stride(0), dx.stride(0), rows,
            HAS_DH=dh is not None, BLOCK_H=block, num_warps=_warps(block),
        )  # fmt: skip
    return dx, dw.sum(0), db.sum(0)


class LayerNormFunction(torch.autograd.Function):
    """Autograd for ``h = x + r``, ``y = xhat * w + b`` with ``xhat = (h - mu) * rstd``.

    Derivation (per row, H features, ``g = dL/dy``, ``g_h`` = gradient arriving at the returned ``h``):
    ``dL/dxhat = g * w``; since ``xhat`` depends on ``h`` through ``mu`` and ``rstd``,
    ``dL/dh = rstd * (g*w - mean(g*w) - xhat * mean(g*w*xhat)) + g_h``, and ``dL/dx = dL/dr = dL/dh``.
    ``dL/dw = sum_rows g * xhat``, ``dL/db = sum_rows g``.

    Returns ``(y, h)`` when a residual is given, ``(y,)`` otherwise (then ``h`` is ``x`` and is not copied).
    Saved: ``h`` (or ``x``), ``w``, fp32 ``mu`` and ``rstd``.
    """

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        lead, hdim = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, hdim).contiguous()
        r2 = None if residual is None else residual.reshape(-1, hdim).contiguous()
        y, h, mean, rstd = layer_norm_forward(x2, r2, weight, bias, eps)
        ctx.save_for_backward(x2 if h is None else h, weight, mean, rstd)
        ctx.has_res, ctx.lead = residual is not None, lead
        ctx.w_dtype, ctx.b_dtype = weight.dtype, None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)
        y = y.reshape(x.shape)
        return (y, h.reshape(x.shape)) if h is not None else (y,)

    @staticmethod
    def backward(ctx, dy, dh=None):
        h, weight, mean, rstd = ctx.saved_tensors
        hdim = h.shape[-1]
        dy = torch.zeros_like(h) if dy is None else dy.reshape(-1, hdim)
        dh = None if dh is None else dh.reshape(-1, hdim)
        dx, dw, db = layer_norm_backward(dy, dh, h, weight, mean, rstd)
        dx = dx.reshape(*ctx.lead, hdim)
        need = ctx.needs_input_grad
        return (
            dx if need[0] else None,
            dx if need[1] else None,
            dw.to(ctx.w_dtype) if need[2] else None,
            db.to(ctx.b_dtype) if need[3] and ctx.b_dtype is not None else None,
            None,
        )


def layer_norm(x, weight, bias=None, residual=None, eps=1e-5):
    """Triton twin of :func:`..reference.layer_norm` (same arguments and result)."""
    out = LayerNormFunction.apply(x, residual, weight, bias, float(eps))
    return (out[0], out[1]) if residual is not None else (out[0], x)
