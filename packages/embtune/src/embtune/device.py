"""Device and dtype choices: bf16 where the hardware runs it fast (measured, not guessed from CPU
flags), fp32 elsewhere."""
from __future__ import annotations

import torch


BF16_MIN_SPEEDUP = 1.3
"""bf16 frozen weights are used on a CPU only when a bf16 matmul is at least this much faster than fp32
(bf16 also costs precision, so a tie goes to fp32)."""


def _time_matmul(dtype: torch.dtype, budget: float | None = None) -> float:
    from embtune.utils.tuning import best_time

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(512, 384, generator=generator).to(dtype)
    b = torch.randn(384, 1536, generator=generator).to(dtype)
    return best_time(lambda: torch.matmul(a, b), repeats=3, budget=budget)


def _measure_cpu_matmul() -> dict:
    """Time one MiniLM-sized linear (512 x 384 -> 1536) in fp32 and bf16 on this CPU."""
    fp32 = _time_matmul(torch.float32)
    bf16 = _time_matmul(torch.bfloat16, budget=4 * fp32)
    return {"fp32_ms": round(1000 * fp32, 4), "bf16_ms": round(1000 * bf16, 4),
            "dtype": "bf16" if fp32 >= BF16_MIN_SPEEDUP * bf16 else "fp32"}


def cpu_has_fast_bf16() -> bool:
    """True when a bf16 matmul runs at least ``BF16_MIN_SPEEDUP`` times faster than fp32 on this CPU:
    measured once per machine (AMX and AVX512-bf16 CPUs pass, CPUs that emulate bf16 do not) and cached
    by `embtune.utils.tuning`."""
    from embtune.utils.tuning import measured

    return measured("matmul-dtype/cpu", "cpu", _measure_cpu_matmul)["dtype"] == "bf16"


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
