"""The one place that decides which backend runs an embtune kernel.

Every public op (``embtune_kernels.lora_linear``, ``layer_norm``, ``pool``, ``info_nce`` ...) calls
:func:`resolve` with its package name and its tensors, and gets back either the op's
``reference`` module (plain PyTorch) or its ``triton`` module. Both modules expose functions with
the same names and signatures, so the op's ``__init__`` never branches on the backend itself.

Rules (the backend is read on every call, so tests can switch it):

* The requested mode is ``use_backend(...)`` if a ``with use_backend(...)`` block is active, else
  the environment variable ``EMBTUNE_KERNELS`` (``auto`` when unset). Valid: auto | triton | torch.
* ``torch``: always the reference.
* ``auto``: Triton when every tensor is on CUDA, every floating tensor is fp32/fp16/bf16 and
  ``import triton`` works; otherwise the reference, silently.
* ``triton``: Triton or an error, never a silent fallback. CUDA tensors run the compiled kernels.
  CPU tensors raise, unless ``TRITON_INTERPRET`` is on: then the kernels run in Triton's CPU
  interpreter (this is how the tests exercise them; ``TRITON_INTERPRET`` must already be on when
  the op's ``triton.py`` is first imported, because ``@triton.jit`` picks interpreter or compiler
  at decoration time).

``triton`` itself is imported lazily, only when a CUDA tensor or an explicit ``triton`` request
shows up, so ``import embtune_kernels`` works on machines without Triton.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

ENV_VAR = "EMBTUNE_KERNELS"
MODES = ("auto", "triton", "torch")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("embtune_kernels_mode", default=None)
_triton_import_error: list[BaseException | None] = []  # cache: [] = not tried, [None] = importable


def _check_mode(name: str) -> str:
    mode = name.strip().lower()
    if mode not in MODES:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {MODES} (env {ENV_VAR})")
    return mode


def requested_mode() -> str:
    """Return the mode in force: innermost ``use_backend`` value, else ``$EMBTUNE_KERNELS``, else "auto"."""
    override = _override.get()
    if override is not None:
        return override
    return _check_mode(os.environ.get(ENV_VAR, "auto") or "auto")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block (tests, benchmarks).

    ``name`` is "torch", "triton" or "auto"; it overrides ``EMBTUNE_KERNELS`` for the current thread /
    async context and is restored on exit, even on error. Yields nothing.
    """
    token = _override.set(_check_mode(name))
    try:
        yield
    finally:
        _override.reset(token)


def has_triton() -> bool:
    """Return True if ``import triton`` succeeds (tried once, then cached)."""
    if not _triton_import_error:
        try:
            importlib.import_module("triton")
            _triton_import_error.append(None)
        except Exception as exc:  # ImportError, or a broken install raising something else
            _triton_import_error.append(exc)
    return _triton_import_error[0] is None


def interpreting() -> bool:
    """Return True if ``TRITON_INTERPRET`` is on (same spellings as Triton accepts: 1/true/on/yes)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def choose(*tensors: torch.Tensor | None) -> str:
    """Return "torch" or "triton" for these tensors under the current mode (``None`` entries are skipped).

    Raises ValueError/RuntimeError/ImportError when ``triton`` was requested explicitly and cannot run.
    """
    mode = requested_mode()
    present = [t for t in tensors if t is not None]
    if mode == "torch":
        return "torch"
    on_cuda = bool(present) and all(t.is_cuda for t in present)
    dtypes_ok = all(t.dtype in SUPPORTED_DTYPES for t in present if t.is_floating_point())
    if mode == "auto":
        return "triton" if on_cuda and dtypes_ok and has_triton() else "torch"
    # mode == "triton": run it or say why not.
    if not has_triton():
        raise ImportError(f"{ENV_VAR}=triton but triton cannot be imported: {_triton_import_error[0]!r}")
    if not dtypes_ok:
        bad = sorted({str(t.dtype) for t in present if t.is_floating_point()})
        raise ValueError(f"Triton kernels support fp32/fp16/bf16 tensors, got {bad}")
    if on_cuda:
        return "triton"
    if any(t.is_cuda for t in present):
        raise RuntimeError("tensors are on mixed devices (some CUDA, some not)")
    if interpreting():
        return "triton"
    raise RuntimeError(
        f"{ENV_VAR}=triton was requested for CPU tensors. Triton kernels need CUDA tensors; to run them "
        "on CPU in Triton's interpreter set TRITON_INTERPRET=1 before importing triton, or use "
        f"{ENV_VAR}=auto / torch."
    )


def resolve(op_package: str, *tensors: torch.Tensor | None) -> ModuleType:
    """Return the implementation module for an op: ``<op_package>.reference`` or ``<op_package>.triton``.

    ``op_package`` is the op's package name (pass ``__name__`` from the op's ``__init__``); ``tensors``
    are the op's tensor arguments, used for the device/dtype rules above.
    """
    backend = choose(*tensors)
    module = importlib.import_module(f"{op_package}.{'triton' if backend == 'triton' else 'reference'}")
    on_cpu = not any(t is not None and t.is_cuda for t in tensors)
    if backend == "triton" and on_cpu and not module.INTERPRETED:
        raise RuntimeError(
            f"{module.__name__} was imported before TRITON_INTERPRET was set, so its kernels were built "
            "for a GPU and cannot take CPU tensors; set TRITON_INTERPRET=1 before the first import."
        )
    return module
