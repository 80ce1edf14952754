"""Device and dtype choices: bf16 where the hardware runs it fast, fp32 elsewhere."""
from __future__ import annotations

import functools

import torch


@functools.cache
def _cpu_flags() -> set[str]:
    """The instruction-set flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            line = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        line = ""
    return set(line.partition(":")[2].split())


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matmul instructions (AMX-bf16 or AVX512-bf16)."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def cpu_has_amx_bf16() -> bool:
    """True when this CPU has AMX-bf16 tiles (PyTorch's CPU flash attention packs bf16 for them)."""
    return "amx_bf16" in _cpu_flags()


def attention_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype to run SDPA in for inputs of ``dtype`` on ``device``.

    On a CPU without AMX, PyTorch's flash-attention kernel is slower in bf16/fp16 than in fp32
    (measured with MiniLM's shapes, AVX512-bf16 EPYC, fwd+bwd: 32 x 256 tokens 142 vs 108 ms,
    32 x 24 tokens 13.2 vs 2.2 ms), so reduced-precision inputs are upcast there. Elsewhere
    (GPUs, AMX CPUs) attention runs in the input dtype.
    """
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not cpu_has_amx_bf16():
        return torch.float32
    return dtype


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
