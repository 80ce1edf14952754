"""LoRA linear (dense or NF4 base weight) in Triton: one fused GEMM kernel, six launches.

Every matrix product of the forward and backward pass is an instance of one kernel,

    C[M, N] = alpha * (A[M, K] @ B[K, N]) + bias[N] + beta * (P[M, R] @ Q[R, N]),

with arbitrary strides (so transposes are free views) and an optional NF4 ``B`` operand that is
decoded tile by tile inside the K loop (the dense base weight is never materialised). The low-rank
term ``P @ Q`` is an epilogue on the same output tile, so the LoRA branch costs no extra pass over
``y`` or ``dx``. Accumulation is fp32; outputs are cast to the destination dtype on store.

Dot operands are cast to ``DOT_DTYPE``: the input dtype on a GPU (bf16/fp16 use the tensor cores;
fp32 uses IEEE fp32 dots, matching torch's default ``allow_tf32=False``), and fp32 whenever the module
was imported under ``TRITON_INTERPRET=1`` (``UPCAST_DOTS``), because the interpreter computes bf16
``tl.dot`` wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from .._util import block_size
from .function import apply
from .nf4 import NF4Weight, nf4_code

INTERPRETED = bool(triton.knobs.runtime.interpret)  # kernels below were built for the CPU interpreter
UPCAST_DOTS = INTERPRETED  # the constexpr "upcast" switch: on only when interpreting

_TL_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


@triton.jit
def _lora_gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, p_ptr, q_ptr, code_ptr, absmax_ptr,
    M, N, K, R,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    stride_pm, stride_pr, stride_qr, stride_qn,
    alpha, beta,
    HAS_BIAS: tl.constexpr, HAS_LOWRANK: tl.constexpr,
    B_NF4: tl.constexpr, NF4_BLOCK: tl.constexpr, NF4_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """One (BLOCK_M, BLOCK_N) tile of C = alpha*A@B + bias + beta*P@Q.

    NF4 ``B``: element (k, n) of the logical B is flat weight element f = k*stride_bk + n*stride_bn;
    its nibble is the high half of byte f//2 for even f, the low half for odd f, and its value is
    code[nibble] * absmax[f // NF4_BLOCK] (fp32), rounded to the weight's dtype like bitsandbytes does.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    m_ok = rm < M
    n_ok = rn < N
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # tl.full, not tl.zeros: see README "interpreter"
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        k_ok = rk < K
        a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak,
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        b_mask = k_ok[:, None] & n_ok[None, :]
        b_off = rk[:, None] * stride_bk + rn[None, :] * stride_bn
        if B_NF4:
            byte = tl.load(b_ptr + (b_off >> 1), mask=b_mask, other=0).to(tl.int32)
            nibble = (byte >> (4 - 4 * (b_off & 1)).to(tl.int32)) & 0xF
            scale = tl.load(absmax_ptr + b_off // NF4_BLOCK, mask=b_mask, other=0.0)
            b = (tl.load(code_ptr + nibble, mask=b_mask, other=0.0) * scale).to(NF4_DTYPE)
        else:
            b = tl.load(b_ptr + b_off, mask=b_mask, other=0.0)
        if IEEE:
            acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision="ieee")
        else:
            acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc)
    acc = acc * alpha
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_LOWRANK:
        low = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
        for r0 in range(0, R, BLOCK_R):
            rr = r0 + tl.arange(0, BLOCK_R).to(tl.int64)
            r_ok = rr < R
            p = tl.load(p_ptr + rm[:, None] * stride_pm + rr[None, :] * stride_pr,
                        mask=m_ok[:, None] & r_ok[None, :], other=0.0)  # fmt: skip
            q = tl.load(q_ptr + rr[:, None] * stride_qr + rn[None, :] * stride_qn,
                        mask=r_ok[:, None] & n_ok[None, :], other=0.0)  # fmt: skip
            if IEEE:
                low = tl.dot(p.to(DOT_DTYPE), q.to(DOT_DTYPE), low, input_precision="ieee")
            else:
                low = tl.dot(p.to(DOT_DTYPE), q.to(DOT_DTYPE), low)
        acc += beta * low
    c_ptrs = c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@dataclass(frozen=True)
class _NF4Operand:
    """A logical 2-D view (shape, element strides) over an NF4 weight's packed bytes, for use as ``B``."""

    packed: torch.Tensor  # flat uint8
    code: torch.Tensor  # fp32 [16]
    absmax: torch.Tensor  # fp32 [n_blocks], double quantization already undone
    blocksize: int
    dtype: torch.dtype
    shape: tuple[int, int]
    strides: tuple[int, int]

    @classmethod
    def of(cls, w: NF4Weight) -> _NF4Operand:
        out_f, in_f = w.shape
        packed = w.packed.reshape(-1).view(torch.uint8).contiguous()
        return cls(packed, nf4_code(packed.device), w.absmax_fp32().contiguous(), w.blocksize, w.dtype,
                   (out_f, in_f), (in_f, 1))  # fmt: skip

    def t(self) -> _NF4Operand:
        return replace(self, shape=self.shape[::-1], strides=self.strides[::-1])


def _dot_dtype(dtype: torch.dtype):
    return tl.float32 if UPCAST_DOTS else _TL_DTYPE[dtype]


def _tiles(m: int, n: int, k: int, dot_dtype) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). tl.dot needs every edge >= 16."""
    if INTERPRETED:  # big tiles = few programs = fast numpy; nothing else matters here
        return block_size(m, 16, 64), block_size(n, 16, 64), block_size(k, 16, 64), 4, 1
    bm, bn = block_size(m, 16, 128), block_size(n, 16, 128)
    bk = block_size(k, 16, 32 if dot_dtype == tl.float32 else 64)
    return bm, bn, bk, (8 if bm * bn >= 128 * 128 else 4), 3


def _gemm(a, b, out, *, dot_dtype, alpha=1.0, bias=None, p=None, q=None, beta=1.0) -> torch.Tensor:
    """out[M, N] = alpha * a[M, K] @ b[K, N] + bias[N] + beta * p[M, R] @ q[R, N]; ``b`` is a tensor
    (any strides) or an :class:`_NF4Operand`. Writes ``out`` in place and returns it."""
    m, k = a.shape
    kb, n = b.shape
    if kb != k or tuple(out.shape) != (m, n):
        raise ValueError(f"gemm shapes: a {tuple(a.shape)}, b {tuple(b.shape)}, out {tuple(out.shape)}")
    if out.numel() == 0:
        return out
    nf4 = isinstance(b, _NF4Operand)
    b_ptr, (sbk, sbn) = (b.packed, b.strides) if nf4 else (b, b.stride())
    r = p.shape[1] if p is not None else 0
    bm, bn, bk, warps, stages = _tiles(m, n, k, dot_dtype)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _lora_gemm_kernel[grid](
        a, b_ptr, out, out if bias is None else bias, out if p is None else p, out if q is None else q,
        b.code if nf4 else out, b.absmax if nf4 else out,
        m, n, k, r,
        a.stride(0), a.stride(1), sbk, sbn, out.stride(0), out.stride(1),
        p.stride(0) if p is not None else 0, p.stride(1) if p is not None else 0,
        q.stride(0) if q is not None else 0, q.stride(1) if q is not None else 0,
        float(alpha), float(beta),
        HAS_BIAS=bias is not None, HAS_LOWRANK=p is not None,
        B_NF4=nf4, NF4_BLOCK=b.blocksize if nf4 else 64, NF4_DTYPE=_TL_DTYPE[b.dtype] if nf4 else tl.float32,
        DOT_DTYPE=dot_dtype, IEEE=dot_dtype == tl.float32 and not INTERPRETED,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_R=block_size(r, 16, 64),
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def lora_linear_forward(x, weight, lora_a, lora_b, bias, scaling):
    """x ``[T, in]``; weight ``[out, in]`` tensor or _NF4Operand -> (y ``[T, out]`` in x.dtype,
    xa = x @ A^T in fp32 ``[T, r]``)."""
    dot = _dot_dtype(x.dtype)
    xa = torch.empty(x.shape[0], lora_a.shape[0], device=x.device, dtype=torch.float32)
    _gemm(x, lora_a.t(), xa, dot_dtype=dot)
    y = torch.empty(x.shape[0], weight.shape[0], device=x.device, dtype=x.dtype)
    _gemm(x, weight.t(), y, dot_dtype=dot, bias=bias, p=xa, q=lora_b.t(), beta=scaling)
    return y, xa


def lora_linear_backward(dy, x, weight, lora_a, lora_b, xa, scaling, needs):
    """dy ``[T, out]`` -> (dx, dA, dB, dbias); ``needs`` = (x, A, B, bias) flags; unneeded grads are None."""
    need_x, need_a, need_b, need_bias = needs
    dot = _dot_dtype(dy.dtype)
    dx = da = db = dbias = None
    if need_x or need_a:  # dxa = s * dy @ B, shared by dx and dA
        dxa = torch.empty(dy.shape[0], lora_a.shape[0], device=dy.device, dtype=torch.float32)
        _gemm(dy, lora_b, dxa, dot_dtype=dot, alpha=scaling)
    if need_x:
        dx = _gemm(dy, weight, torch.empty_like(x), dot_dtype=dot, p=dxa, q=lora_a)
    if need_a:
        da = _gemm(dxa.t(), x, torch.empty_like(lora_a), dot_dtype=dot)
    if need_b:
        db = _gemm(dy.t(), xa, torch.empty_like(lora_b), dot_dtype=dot, alpha=scaling)
    if need_bias:
        dbias = dy.sum(0, dtype=torch.float32)
    return dx, da, db, dbias


class _TritonOps:
    """The fused-kernel arithmetic for :class:`..function.LoRALinearFunction`.

    Forward: ``u = x A^T`` (fp32, saved) and ``y = x W^T + b + s u B^T`` (one kernel, low-rank epilogue).
    Backward, with ``G = dL/dy``: ``du = s G B`` (shared), ``dL/dx = G W + du A`` (one kernel),
    ``dL/dA = du^T x``, ``dL/dB = s G^T u``, ``dL/db = sum_t G`` (fp32). Saved: x (2-D, contiguous),
    A, B, u and W (or the NF4 operand, kept outside the saved tensors). No ``T x out`` intermediate is kept.
    """

    contiguous_input = True

    @staticmethod
    def forward(x2, weight, lora_a, lora_b, bias, scaling):
        """x2 ``[T, in]`` contiguous -> (y2, xa fp32, A, B, W or None for an NF4 operand)."""
        y, xa = lora_linear_forward(x2, weight, lora_a, lora_b, bias, scaling)
        return y, xa, lora_a, lora_b, None if isinstance(weight, _NF4Operand) else weight

    @staticmethod
    def backward(g2, x2, weight, lora_a, lora_b, xa, scaling, needs):
        """g2 ``[T, out]`` -> (dx2, dA, dB, dbias fp32); entries not in ``needs`` are None."""
        return lora_linear_backward(g2, x2, weight, lora_a, lora_b, xa, scaling, needs)


TRITON_OPS = _TritonOps()


def lora_linear(x, weight, lora_a, lora_b, bias=None, scaling=1.0):
    """Triton twin of :func:`..reference.lora_linear` (same arguments and result)."""
    return apply(x, weight.detach(), lora_a, lora_b, bias, scaling, TRITON_OPS)


def lora_linear_nf4(x, weight: NF4Weight, lora_a, lora_b, bias=None, scaling=1.0):
    """Triton twin of :func:`..reference.lora_linear_nf4`: the NF4 nibbles are decoded inside the GEMM."""
    return apply(x, _NF4Operand.of(weight), lora_a, lora_b, bias, scaling, TRITON_OPS)
