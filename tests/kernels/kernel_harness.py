"""Helpers shared by the kernel tests: seeded inputs, one forward+backward, Triton-vs-reference check."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tolerances import assert_close

from embtune_kernels import use_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def randn(*shape: int, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fresh N(0, scale^2) tensor from its own seeded generator (drawn in fp32 on CPU, cast, moved)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tuple(shape), generator=g) * scale).to(dtype).to(DEVICE)


def _is_float(v: object) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def forward_backward(
    fn: Callable[..., object], inputs: dict[str, object], diff: Sequence[str], seed: int
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Run ``fn(**inputs)`` on fresh leaf copies (``diff`` names get requires_grad) and backpropagate
    ``sum_k <out_k, c_k>`` with seeded cotangents ``c_k`` (bf16-representable values).

    Returns (detached outputs, {name: grad}); a missing grad for a ``diff`` name raises AssertionError.
    """
    leaves = {
        k: (v.detach().clone().requires_grad_(k in diff) if isinstance(v, torch.Tensor) else v)
        for k, v in inputs.items()
    }
    out = fn(**leaves)
    outs = list(out) if isinstance(out, tuple) else [out]
    loss = 0.0
    for i, o in enumerate(outs):
        cot = randn(*o.shape, seed=seed + 1000 + i).to(torch.bfloat16).to(torch.float64)
        loss = loss + (o.double() * cot).sum()
    grads_in = [leaves[k] for k in diff]
    grads = torch.autograd.grad(loss, grads_in, allow_unused=True)
    missing = [k for k, g in zip(diff, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    return [o.detach() for o in outs], dict(zip(diff, grads))


def check_triton_vs_reference(
    fn: Callable[..., object],
    inputs: dict[str, object],
    diff: Sequence[str],
    dtype: torch.dtype,
    seed: int = 0,
) -> None:
    """Assert that ``fn`` under the Triton backend on ``inputs`` (floating tensors already in ``dtype``)
    matches ``fn`` under the reference backend on fp32 copies of the same values: every output and the
    gradient of every name in ``diff`` (gradients must also come back in the input's dtype)."""
    up = {k: (v.float() if _is_float(v) else v) for k, v in inputs.items()}
    with use_backend("triton"):
        outs, grads = forward_backward(fn, inputs, diff, seed)
    with use_backend("torch"):
        ref_outs, ref_grads = forward_backward(fn, up, diff, seed)
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert_close(o, r, "triton_vs_reference", dtype, f"output[{i}]")
    for k in diff:
        assert grads[k].dtype == inputs[k].dtype, f"grad of {k}: dtype {grads[k].dtype} != {inputs[k].dtype}"
        assert_close(grads[k], ref_grads[k], "triton_vs_reference", dtype, f"grad[{k}]")
