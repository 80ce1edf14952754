"""NF4 (4-bit NormalFloat) weights as bitsandbytes stores them, and a pure-PyTorch dequantizer.

Layout (read from bitsandbytes 0.50.2: ``functional.quantize_4bit`` / ``dequantize_4bit`` and the
``default`` backend's ``_dequantize_4bit_compute``):

* The weight ``W [out, in]`` is flattened row-major; element ``f`` (``0 <= f < out*in``) is stored in
  byte ``f // 2`` of a uint8 tensor (bitsandbytes keeps it as ``[ceil(numel/2), 1]``): the HIGH
  nibble for even ``f``, the LOW nibble for odd ``f``.
* A nibble is an index into the 16-entry NF4 table :data:`NF4_CODE` (quantiles of N(0, 1) scaled
  to [-1, 1]; not a float encoding).
* Blocks of ``blocksize`` (default 64) consecutive flat elements share one scale, ``absmax[f //
  blocksize]`` (fp32); blocks may straddle rows. ``W[f] = NF4_CODE[nibble(f)] * absmax[f // blocksize]``
  computed in fp32, then cast to the weight dtype.
* Double quantization (``compress_statistics=True``): ``absmax`` is itself uint8, an index into
  an 8-bit "dynamic" code of 256 fp32 values (``quant_state.state2.code``), with one fp32 scale
  per block of 256 (``state2.absmax``, ``state2.blocksize``) and a scalar ``offset`` (the mean that
  was subtracted before quantizing): ``absmax[j] = code2[q[j]] * absmax2[j // 256] + offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

NF4_CODE_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip


def nf4_code(device: torch.device | str | None = None) -> torch.Tensor:
    """Return the 16 NF4 code values as an fp32 tensor on ``device``."""
    return torch.tensor(NF4_CODE_VALUES, dtype=torch.float32, device=device)


@dataclass(frozen=True)
class NF4Weight:
    """A frozen NF4-quantized weight ``[out_features, in_features]`` (plain tensors; bitsandbytes optional).

    Fields: ``packed`` uint8 (any shape, ``ceil(numel/2)`` bytes); ``absmax`` fp32 ``[n_blocks]``, or uint8
    ``[n_blocks]`` when double-quantized; ``shape`` ``(out, in)``; ``blocksize``; ``dtype`` the dtype the
    weight dequantizes to; for double quantization ``nested_absmax`` fp32, ``nested_code`` fp32 ``[256]``,
    ``nested_blocksize`` and ``offset``; ``bnb_state`` the bitsandbytes ``QuantState`` it came from, if any
    (the reference path then dequantizes with bitsandbytes itself).
    """

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, int]
    blocksize: int = 64
    dtype: torch.dtype = torch.float32
    nested_absmax: torch.Tensor | None = None
    nested_code: torch.Tensor | None = None
    nested_blocksize: int = 256
    offset: torch.Tensor | float = 0.0
    bnb_state: Any = None

    @classmethod
    def from_bnb(cls, packed: torch.Tensor, quant_state: Any) -> NF4Weight:
        """Wrap a bitsandbytes 4-bit weight: ``packed`` (e.g. ``Params4bit.data``) and its ``QuantState``.

        Raises ValueError for anything but a 2-D nf4 weight.
        """
        if quant_state.quant_type != "nf4":
            raise ValueError(f"only nf4 is supported, got quant_type={quant_state.quant_type!r}")
        if len(quant_state.shape) != 2:
            raise ValueError(f"expected a 2-D weight, got shape {tuple(quant_state.shape)}")
        nested = {}
        if quant_state.nested:
            s2 = quant_state.state2
            nested = dict(
                nested_absmax=s2.absmax.float(),
                nested_code=s2.code.float(),
                nested_blocksize=int(s2.blocksize),
                offset=quant_state.offset,
            )
        return cls(
            packed=packed,
            absmax=quant_state.absmax,
            shape=(int(quant_state.shape[0]), int(quant_state.shape[1])),
            blocksize=int(quant_state.blocksize),
            dtype=quant_state.dtype,
            bnb_state=quant_state,
            **nested,
        )

    @property
    def numel(self) -> int:
        """Number of weight elements, ``out * in``."""
        return self.shape[0] * self.shape[1]

    @property
    def device(self) -> torch.device:
        """Device of the packed bytes."""
        return self.packed.device

    def absmax_fp32(self) -> torch.Tensor:
        """Return the per-block scales as fp32 ``[n_blocks]``, undoing double quantization if present."""
        if self.nested_absmax is None:
            return self.absmax.float()
        idx = self.absmax.reshape(-1).long()
        block = torch.arange(idx.numel(), device=idx.device) // self.nested_blocksize
        scales = self.nested_code.to(idx.device)[idx] * self.nested_absmax.to(idx.device)[block]
        return scales + self.offset


def dequantize_nf4(weight: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Pure-PyTorch NF4 dequantization: ``weight`` -> dense ``[out, in]`` in ``dtype`` (or weight.dtype).

    Same arithmetic as bitsandbytes (code value times fp32 block scale, then one cast).
    """
    n = weight.numel
    flat = weight.packed.reshape(-1).view(torch.uint8).to(torch.int64)
    nibbles = torch.stack((flat >> 4, flat & 0xF), dim=-1).reshape(-1)[:n]
    if nibbles.numel() != n:
        raise ValueError(f"packed holds {2 * flat.numel()} nibbles, weight needs {n}")
    block = torch.arange(n, device=flat.device) // weight.blocksize
    values = nf4_code(flat.device)[nibbles] * weight.absmax_fp32()[block]
    return values.reshape(weight.shape).to(dtype or weight.dtype)


def dequantize(weight: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dense ``[out, in]`` weight in ``dtype``: bitsandbytes' own dequantizer when ``weight.bnb_state`` is set
    and bitsandbytes imports, else :func:`dequantize_nf4`.

    Exception: on CPU with ``in_features % blocksize != 0`` (scale blocks straddling rows) the pure-torch
    path is used, because bitsandbytes 0.50.2's native CPU nf4 kernel disagrees with its own quantizer
    there (seen for in_features a multiple of 16 but not of 64; its pure-torch "default" backend agrees
    with :func:`dequantize_nf4`).
    """
    straddles = weight.shape[1] % weight.blocksize != 0
    if weight.bnb_state is not None and (weight.packed.is_cuda or not straddles):
        try:
            import bitsandbytes.functional as bnb_f
        except Exception:  # not installed, or no native library for this platform
            bnb_f = None
        if bnb_f is not None:
            return bnb_f.dequantize_4bit(weight.packed, weight.bnb_state).to(dtype or weight.dtype)
    return dequantize_nf4(weight, dtype)
