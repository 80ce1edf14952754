"""Does torch.compile pay on this CPU for the elementwise work left in a MiniLM training step?

    python examples/benchmarks/compile_fusions.py

Times forward + backward of the fusible pieces of a BERT layer on a packed stream of MiniLM-sized
activations (8,200 tokens, hidden 384, intermediate 1536, bf16) eagerly and under
``torch.compile(dynamic=True)`` (inductor's C++ CPU backend; packed batches change length every step,
so dynamic shapes are what training would need), and prints a table with the one-off compile time.
embtune's fast path runs these pieces eagerly because of what this prints (README, Speed).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

TOKENS, HIDDEN, INTERMEDIATE = 8200, 384, 1536


def _step(fn, inputs, grad) -> None:
    """One forward + backward of ``fn(*inputs)`` with output gradient ``grad``."""
    fn(*inputs).backward(grad)


def _ms(fn, inputs, grad, repeats: int = 30) -> float:
    """Mean wall time in ms of `_step` after two warm-up calls."""
    _step(fn, inputs, grad)
    _step(fn, inputs, grad)
    start = time.perf_counter()
    for _ in range(repeats):
        _step(fn, inputs, grad)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    """Build the activations, time each piece eagerly and compiled, print the Markdown table."""
    torch.manual_seed(0)
    dt = torch.bfloat16
    wide = torch.randn(TOKENS, INTERMEDIATE, dtype=dt, requires_grad=True)
    wide_grad = torch.randn(TOKENS, INTERMEDIATE, dtype=dt)
    hidden = torch.randn(TOKENS, HIDDEN, dtype=dt, requires_grad=True)
    residual = torch.randn(TOKENS, HIDDEN, dtype=dt, requires_grad=True)
    hidden_grad = torch.randn(TOKENS, HIDDEN, dtype=dt)
    norm = torch.nn.LayerNorm(HIDDEN).to(dt)
    keep = torch.rand(TOKENS, HIDDEN) > 0.1
    pieces = {
        "GELU (intermediate)": (lambda a: F.gelu(a), (wide,), wide_grad),
        "residual add + LayerNorm": (lambda a, b: norm(a + b), (hidden, residual), hidden_grad),
        "dropout (given mask) + residual add + LayerNorm":
            (lambda a, b: norm(torch.where(keep, a, 0) * (1 / 0.9) + b), (hidden, residual), hidden_grad),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {TOKENS} tokens, bf16, forward + backward\n")
    print("| piece | eager ms | compiled ms | compiled / eager | compile s |")
    print("|---|---|---|---|---|")
    for name, (fn, inputs, grad) in pieces.items():
        eager = _ms(fn, inputs, grad)
        compiled_fn = torch.compile(fn, dynamic=True)
        start = time.perf_counter()
        _step(compiled_fn, inputs, grad)
        compile_s = time.perf_counter() - start
        compiled = _ms(compiled_fn, inputs, grad)
        print(f"| {name} | {eager:.2f} | {compiled:.2f} | {compiled / eager:.2f}x | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
