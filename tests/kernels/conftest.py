"""Kernel tests: each op's Triton kernels against its reference, and the reference against float64.

How the Triton kernels run here:

* With CUDA, the kernels are compiled and run on CUDA tensors (``kernel_harness.DEVICE``).
* Without CUDA, they run in Triton's CPU interpreter. ``@triton.jit`` picks interpreter or compiler
  when a kernel is *defined*, i.e. when ``embtune_kernels.<op>.triton`` is imported, so this file
  imports those modules right now, at collection time, with ``TRITON_INTERPRET=1`` set only around
  the import (a module already imported without it is reloaded). The variable is then restored, so
  it does not leak into other test folders: later ``@triton.jit`` definitions elsewhere in the process
  are unaffected. During each test of this folder an autouse fixture sets ``TRITON_INTERPRET=1`` again
  (monkeypatch, undone after the test), because the dispatcher only lets CPU tensors take the Triton
  path when it is on.
* In a full ``pytest tests`` run, triton is usually imported earlier and without the variable (by
  sentence-transformers, peft or bitsandbytes while other folders are collected), so triton.language's
  own ``@jit`` helpers (``tl.sum``, ``tl.max``, ``tl.zeros``) are built for the compiler. The kernels
  therefore use only builtins plus ``@jit`` helpers of their own (``tl.reduce`` with local combine
  functions, ``tl.full``), which makes them work in the interpreter whatever the import order;
  ``test_dispatch.py::test_interpreted_kernels_work_when_triton_was_imported_first`` guards this.
  So nothing here needs TRITON_INTERPRET to be process-global, and other folders never see it.
* bf16 in the interpreter: ``tl.dot`` on bf16 operands is wrong there, so every kernel upcasts its dot
  operands to fp32 under a constexpr (``UPCAST_DOTS``) that is on only when interpreted; bf16 tests
  therefore check the bf16 loads/stores and the surrounding math, and the bf16 tensor-core dots are
  only checked on a real GPU (the same tests, run with CUDA).

Tests marked ``@pytest.mark.gpu`` are skipped unless CUDA and Triton are both available (the skip is
implemented below for this folder).
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

CUDA = torch.cuda.is_available()
OPS = ("lora_linear", "layer_norm", "pooling", "infonce")


def _load_triton_kernels() -> bool:
    """Import every op's triton.py (interpreted when there is no CUDA); False if triton is unavailable."""
    interpret = not CUDA
    saved = os.environ.get("TRITON_INTERPRET")
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        try:
            importlib.import_module("triton")
        except Exception:
            return False
        for op in OPS:
            module = importlib.import_module(f"embtune_kernels.{op}.triton")
            if interpret and not module.INTERPRETED:
                importlib.reload(module)
        return True
    finally:
        if interpret:
            if saved is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = saved


TRITON_KERNELS = _load_triton_kernels()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not (CUDA and TRITON_KERNELS):
        pytest.skip("needs CUDA and Triton")


@pytest.fixture(autouse=True)
def _kernel_test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per test: no EMBTUNE_KERNELS from the shell, TRITON_INTERPRET=1 on CPU-only machines, seed 0."""
    monkeypatch.delenv("EMBTUNE_KERNELS", raising=False)
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)


@pytest.fixture
def needs_triton() -> None:
    """Skip the test when triton cannot be imported (the Triton-vs-reference tests need it)."""
    if not TRITON_KERNELS:
        pytest.skip("triton is not installed")
