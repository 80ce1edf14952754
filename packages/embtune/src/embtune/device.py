"""Device and dtype choices: bf16 where the hardware runs it fast, fp32 elsewhere."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matmul instructions (AMX-bf16 or AVX512-bf16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return " amx_bf16" in flags or " avx512_bf16" in flags


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """The dtype frozen weights are held in on ``device``: bf16 where it is fast, else fp32."""
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device | str | None = None) -> torch.dtype:
    """Turn ``None`` / "auto" / "bf16" / "fp16" / "fp32" / a torch dtype into a torch dtype."""
    if dtype is None or dtype == "auto":
        return fast_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
               "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
               "float32": torch.float32, "float": torch.float32}
    if dtype not in aliases:
        from embtune.errors import ConfigError

        raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(aliases)} or 'auto'")
    return aliases[dtype]
