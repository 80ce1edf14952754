"""Per-machine measurements, cached on disk: fast paths are chosen by timing them, not by CPU flags.

A choice (which attention implementation, which matmul dtype) is measured once per machine and
stored in ``cache_dir()/tuning.json`` under the machine's key (CPU or GPU model, thread count, torch
version), so later runs, other processes and other ranks read the same answer instead of timing
again. Delete the file (or an entry) to measure again; edit an entry to force a choice.

``cache_dir()`` is the one embtune cache folder: ``$EMBTUNE_CACHE_DIR``, else
``$XDG_CACHE_HOME/embtune``, else ``~/.cache/embtune``.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from embtune.utils.atomic import atomic_write_json

logger = logging.getLogger("embtune")

TUNING_FILE = "tuning.json"
_lock = threading.RLock()
_memory: dict[tuple[str, str], Any] = {}


def cache_dir() -> Path:
    """embtune's cache folder (see the module docstring); not created here."""
    explicit = os.environ.get("EMBTUNE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "embtune"


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown cpu"


def machine_key(device: torch.device | str = "cpu") -> str:
    """What a measurement depends on besides its own inputs: the processor model, the number of
    threads torch uses, and the torch version. In: a device. Out: a string key."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
    else:
        name = f"{_cpu_model()} x{torch.get_num_threads()}"
    return f"{device.type}:{name}|torch {torch.__version__}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured(name: str, device: torch.device | str, measure: Callable[[], Any]) -> Any:
    """The cached result of ``measure()`` for ``name`` on this machine, measuring it on first use.

    In: ``name`` (what is measured, including the shapes it depends on), the device it runs on, and
    a zero-argument function returning a JSON-serialisable result. Out: that result, from memory,
    from ``cache_dir()/tuning.json``, or freshly measured (then stored; a cache that cannot be
    written only costs a measurement next time).
    """
    key = (machine_key(device), name)
    with _lock:
        if key in _memory:
            return _memory[key]
        path = cache_dir() / TUNING_FILE
        entry = _read(path).get(key[0], {}).get(name)
        if entry is not None:
            _memory[key] = entry
            return entry
        started = time.perf_counter()
        entry = measure()
        logger.info("embtune: measured %s on %s in %.2f s -> %s (cached in %s)", name, key[0],
                    time.perf_counter() - started, entry, path)
        _memory[key] = entry
        data = _read(path)
        data.setdefault(key[0], {})[name] = entry
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, data)
        except Exception as exc:  # a read-only home must not stop training
            logger.warning("embtune: could not write the tuning cache %s (%s)", path, exc)
        return entry


def forget() -> None:
    """Drop the in-memory copies (the file stays); the next ``measured`` call reads the file again."""
    with _lock:
        _memory.clear()


def best_time(run: Callable[[], Any], repeats: int = 3, budget: float | None = None,
              warm_up: bool = True) -> float:
    """Seconds of the fastest call of ``run``: a first call (the warm-up, when ``warm_up``), then ``repeats``
    more.

    In: a zero-argument function, the number of further calls, an optional budget in seconds (when the
    first call alone takes longer, its time is returned without repeats: a candidate that slow has lost
    already), and whether the first call is a warm-up (its time counts only when nothing else does).
    Out: seconds.
    """
    started = time.perf_counter()
    run()
    first = time.perf_counter() - started
    if budget is not None and first > budget:
        return first
    best = first if (not warm_up or repeats == 0) else float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


__all__ = ["best_time", "cache_dir", "forget", "machine_key", "measured"]
