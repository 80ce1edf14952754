"""Which implementation computes packed attention on this machine: measured once, cached on disk.

An implementation is named ``VARIANT`` or ``VARIANT@DTYPE``:

* ``VARIANT``: ``bucket`` (length-bucketed SDPA), ``sequence`` (one SDPA call per text), ``eager``
  (autograd through explicit matmuls), ``matmul`` (two batched matmuls with a hand-written backward
  that saves the probabilities, `embtune.models.matmul_attention`) or ``matmul-recompute`` (the same,
  recomputing the probabilities in the backward);
* ``DTYPE``: ``fp32``, ``bf16`` or ``fp16``, the dtype the attention runs in (default: the dtype of
  the query, i.e. of the model's activations).

``"auto"`` (the default everywhere) times every candidate (an untimed warm-up call and a timed call
each, then three interleaved rounds of those within 3x of the fastest),
forward and backward when training (the module is in training mode) and forward only when not, on a
packed batch of 16 query-length and 16 document-length texts with the model's own head count, head
size and dtype, and keeps the fastest. A busy machine at that moment gives a warning. The answer is stored by
`embtune.utils.tuning` (``~/.cache/embtune/tuning.json``, per CPU/GPU model, thread count and torch
version) and logged. ``$EMBTUNE_ATTENTION`` overrides ``"auto"`` without code changes (e.g.
``EMBTUNE_ATTENTION=matmul@bf16``); an explicit name passed to the model wins over both.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from embtune.utils import tuning

logger = logging.getLogger("embtune")

ENV_VAR = "EMBTUNE_ATTENTION"
AUTO = "auto"
VARIANTS = ("bucket", "sequence", "eager", "matmul", "matmul-recompute")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
BENCH_LENGTHS = tuple([16 + (i * 7) % 32 for i in range(16)] + [96 + (i * 37) % 161 for i in range(16)])
"""Texts of the timing batch: 16 query-like (16-47 tokens) and 16 document-like (96-256 tokens)."""
_announced: set[str] = set()


@dataclass(frozen=True)
class AttentionImpl:
    """One way to compute packed attention: a variant and the dtype it runs in (None: the input's)."""

    variant: str
    dtype: torch.dtype | None = None

    def compute_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """The dtype attention runs in for activations of ``input_dtype``."""
        return self.dtype or input_dtype

    def __str__(self) -> str:
        return self.variant if self.dtype is None else f"{self.variant}@{_DTYPE_NAMES[self.dtype]}"


@functools.cache
def parse(spec: str) -> AttentionImpl | None:
    """``"auto"`` → None; ``"VARIANT[@DTYPE]"`` → an AttentionImpl. Raises ValueError naming the choices."""
    text = spec.strip().lower()
    if text == AUTO:
        return None
    variant, sep, dtype = text.partition("@")
    if variant not in VARIANTS or (sep and dtype not in DTYPES):
        raise ValueError(f"unknown attention implementation {spec!r}: use 'auto' or VARIANT[@DTYPE] with VARIANT "
                         f"one of {VARIANTS} and DTYPE one of {tuple(DTYPES)}")
    return AttentionImpl(variant, DTYPES[dtype] if dtype else None)


def check(spec: str) -> str:
    """Validate an attention name (see the module docstring); returns it unchanged or raises ValueError."""
    parse(spec)
    return spec


def candidates(dtype: torch.dtype) -> list[AttentionImpl]:
    """What ``"auto"`` times for activations of ``dtype``: every fast variant in that dtype and, for
    16-bit activations, SDPA and matmul attention upcast to fp32 (faster on CPUs without bf16 units)."""
    found = [AttentionImpl(v) for v in ("bucket", "sequence", "matmul", "matmul-recompute")]
    if dtype != torch.float32:
        found += [AttentionImpl("bucket", torch.float32), AttentionImpl("matmul", torch.float32)]
    return found


Runner = Callable[..., torch.Tensor]
"""``run(query, key, value, cu_seqlens, impl, causal=, scaling=) -> out``: packed attention with one
implementation (`embtune.models.varlen_attention` hands its own in, so this module imports nothing of it)."""


def resolve(spec: str, query: torch.Tensor, key: torch.Tensor, *, causal: bool, training: bool,
            run: Runner) -> AttentionImpl:
    """The implementation to use for this attention call.

    In: the configured name (``"auto"`` or explicit), the call's ``query [.., H, T, D]`` and ``key [.., Hkv,
    T, D]`` (their shapes, dtype and device pick the cache entry), ``causal``, ``training`` (the module's
    mode, not autograd's: GradCache's no-grad first pass and its replay must use the same implementation),
    and the packed-attention runner to time candidates with. Out: an AttentionImpl.
    """
    impl = parse(spec)
    if impl is None:
        override = os.environ.get(ENV_VAR, "").strip()
        impl = parse(override) if override else None
    if impl is None:
        impl = choose(query.shape[-3], key.shape[-3], query.shape[-1], query.dtype, query.device, causal=causal,
                      training=training, run=run)
    return impl


def entry_name(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, *, causal: bool, training: bool) -> str:
    """The name a choice is cached under in `embtune.utils.tuning`.

    In: the shapes, dtype and mode `choose` takes. Out: e.g. ``attention/train/H12-12/D32/fp32/bidirectional``.
    """
    return (f"attention/{'train' if training else 'infer'}/H{heads}-{kv_heads}/D{head_dim}/"
            f"{_DTYPE_NAMES.get(dtype, str(dtype))}/{'causal' if causal else 'bidirectional'}")


def choose(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device, *, causal: bool,
           training: bool, run: Runner) -> AttentionImpl:
    """The fastest candidate for these shapes on this machine (measured on first use, then cached).

    In: query heads, key/value heads, head size, activation dtype, device, ``causal``, ``training``, the
    packed-attention runner (see ``Runner``). Out: the AttentionImpl that won; the choice and every
    candidate's time are logged once per process.
    """
    name = entry_name(heads, kv_heads, head_dim, dtype, causal=causal, training=training)
    entry = tuning.measured(name, device, lambda: _measure(heads, kv_heads, head_dim, dtype, device, causal,
                                                           training, run))
    if name not in _announced:
        _announced.add(name)
        logger.info("embtune: packed attention for %s: %s (ms per call: %s; override with %s=...)", name,
                    entry["choice"], entry["ms"], ENV_VAR)
    return parse(entry["choice"])


def _measure(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device, causal: bool,
             training: bool, run_packed: Runner) -> dict:
    """Time every candidate on the timing batch; returns ``{"choice": name, "ms": {name: ms}, "load": 1-min load}``.

    The timing may happen inside the model's first forward, even one under activation checkpointing:
    identity saved-tensor hooks keep the timing's own autograd graphs out of the checkpoint's bookkeeping.
    """
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor):
        return _time_candidates(heads, kv_heads, head_dim, dtype, device, causal, training, run_packed)


def _time_candidates(heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                     causal: bool, training: bool, run_packed: Runner) -> dict:
    lengths = list(BENCH_LENGTHS)
    total = sum(lengths)
    cu = torch.tensor([0] + [sum(lengths[:i + 1]) for i in range(len(lengths))], dtype=torch.int32, device=device)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def tensor(h: int) -> torch.Tensor:
        return torch.randn(1, h, total, head_dim, generator=generator).to(device=device, dtype=dtype)

    q, k, v = tensor(heads), tensor(kv_heads), tensor(kv_heads)
    grad = tensor(heads).transpose(1, 2)
    runs = {}
    for impl in candidates(dtype):
        inputs = [x.detach().requires_grad_(training) for x in (q, k, v)]

        def run(impl: AttentionImpl = impl, inputs: list = inputs) -> None:
            with torch.enable_grad() if training else torch.no_grad():
                out = run_packed(*inputs, cu, impl, causal=causal, scaling=head_dim ** -0.5)
                if training:
                    out.backward(grad)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        runs[str(impl)] = run
    # Each candidate: an untimed first call (thread pools, allocator, per-shape kernels warm up), then
    # one timed call; a candidate 3x slower than the best is out. The rest are timed in interleaved
    # rounds, so a burst of load from another process hits every candidate alike.
    timings = {name: tuning.best_time(run, repeats=1) for name, run in runs.items()}
    contenders = [name for name, ms in timings.items() if ms <= 3 * min(timings.values())]
    for _ in range(3):
        for name in contenders:
            timings[name] = min(timings[name], tuning.best_time(runs[name], repeats=0, warm_up=False))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1):
        logger.warning("embtune: the attention timing ran while the machine was busy (load %.1f on %d cores); "
                       "if training seems slow, delete %s to measure again", load, os.cpu_count() or 1,
                       tuning.cache_dir() / tuning.TUNING_FILE)
    ms = {name: round(1000 * seconds, 3) for name, seconds in timings.items()}
    return {"choice": min(ms, key=ms.get), "ms": ms, "load": round(load, 2)}


__all__ = ["AUTO", "AttentionImpl", "DTYPES", "ENV_VAR", "Runner", "VARIANTS", "candidates", "check", "choose",
           "entry_name", "parse", "resolve"]
