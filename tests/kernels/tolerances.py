"""The one tolerance table of tests/kernels, and the comparison that applies it.

``TOLERANCES[(comparison, dtype)] = (atol, rtol)``; an element passes when
``|actual - expected| <= atol * max|expected| + rtol * |expected|`` (``atol`` is relative to the largest
magnitude of the expected tensor, so one entry serves tensors of any scale).

Why these numbers:

* ``reference_vs_fp64``: the fp32 reference against a naive float64 implementation; fp32 rounding over
  sums of ~100 terms stays far below 1e-5 of the largest value.
* ``triton_vs_reference`` fp32: same math, different summation order (tiled fp32 accumulation; IEEE fp32
  dots on a GPU).
* ``triton_vs_reference`` bf16/fp16: the Triton result is a bf16/fp16 tensor compared with the fp32
  reference evaluated on the same (already rounded) inputs. One bf16 rounding of the output is up to
  2**-8 relative (2**-7 in Triton's interpreter, whose fp32->bf16 cast truncates instead of rounding to
  nearest); on a GPU the tensor-core path also rounds intermediates (the LoRA ``x A^T``, softmax
  probabilities) to bf16 before their second product, which shows up as absolute error relative to
  the largest entry. In the interpreter the dot operands are upcast to fp32 (UPCAST_DOTS), see
  ``create_dot`` in ``triton/runtime/interpreter.py`` (``np.matmul`` in the accumulator's dtype).
* ``nf4_vs_bitsandbytes``: same arithmetic (code value * fp32 scale, one cast): exact.
"""

from __future__ import annotations

import torch

TOLERANCES: dict[tuple[str, torch.dtype], tuple[float, float]] = {
    ("reference_vs_fp64", torch.float32): (1e-5, 1e-4),
    ("triton_vs_reference", torch.float32): (1e-5, 1e-4),
    ("triton_vs_reference", torch.float16): (4e-3, 4e-3),
    ("triton_vs_reference", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("nf4_vs_bitsandbytes", torch.float32): (0.0, 0.0),
    ("nf4_vs_bitsandbytes", torch.float16): (0.0, 0.0),
    ("nf4_vs_bitsandbytes", torch.bfloat16): (0.0, 0.0),
}


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, comparison: str, dtype: torch.dtype, name: str
) -> None:
    """Raise AssertionError, with mismatch count / worst element / NaN report, unless ``actual`` matches
    ``expected`` within ``TOLERANCES[(comparison, dtype)]``. Both are compared in float64."""
    atol, rtol = TOLERANCES[(comparison, dtype)]
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    if not torch.isfinite(e).all():
        raise AssertionError(f"{name}: the expected tensor itself has NaN/inf")
    bad_nan = ~torch.isfinite(a)
    scale = e.abs().max().item() if e.numel() else 0.0
    err = (a - e).abs()
    bad = bad_nan | (err > atol * scale + rtol * e.abs())
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{name} ({comparison}, {dtype}): {int(bad.sum())}/{bad.numel()} elements out of tolerance "
            f"(atol={atol}*{scale:.3g}, rtol={rtol}); {int(bad_nan.sum())} non-finite; first at {idx}: "
            f"actual {a[idx].item():.6g} vs expected {e[idx].item():.6g}; "
            f"max abs err {err.nan_to_num(float('inf')).max().item():.3g}"
        )
