"""Spherical interpolation (SLERP) of two models of the same architecture, tensor by tensor.

Qwen3-Embedding merged checkpoints of its fine-tuning run by spherical linear interpolation to gain
robustness. For each floating-point weight tensor, flattened to a vector, with ``omega`` the angle
between ``a`` and ``b``::

    slerp(a, b, t) = sin((1 - t) * omega) / sin(omega) * a  +  sin(t * omega) / sin(omega) * b

computed in float64 and cast back to ``a``'s dtype. Nearly parallel (or zero) tensors fall back to
linear interpolation. ``t = 0`` gives ``a`` and ``t = 1`` gives ``b`` exactly. Integer buffers are
taken from ``a`` (and must equal ``b``'s).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from embtune.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import torch

PARALLEL_EPS = 1e-6


def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two same-shaped float tensors; returns a tensor like ``a``.

    In: ``a``, ``b`` (same shape), ``t`` in [0, 1]. Out: a new tensor of ``a``'s dtype and device.
    Raises ValueError for a shape mismatch or t outside [0, 1].
    """
    import torch

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    va = a.detach().to(torch.float64).flatten()
    vb = b.detach().to(torch.float64).flatten().to(va.device)
    na, nb = float(va.norm()), float(vb.norm())
    if na < PARALLEL_EPS or nb < PARALLEL_EPS:
        out = (1.0 - t) * va + t * vb
    else:
        cos = max(-1.0, min(1.0, float(va @ vb) / (na * nb)))
        omega = math.acos(cos)
        sin_omega = math.sin(omega)
        if sin_omega < PARALLEL_EPS:
            out = (1.0 - t) * va + t * vb
        else:
            out = (math.sin((1.0 - t) * omega) / sin_omega) * va + (math.sin(t * omega) / sin_omega) * vb
    return out.reshape(a.shape).to(a.dtype)


def slerp_state_dicts(sd_a: dict[str, torch.Tensor], sd_b: dict[str, torch.Tensor],
                      t: float) -> dict[str, torch.Tensor]:
    """SLERP every floating-point tensor of two state dicts with the same keys and shapes.

    In: two ``{name: tensor}`` dicts and ``t``. Out: a new dict with ``a``'s keys. Raises ConfigError
    naming the first key that is missing from one side, has another shape, or (for integer buffers)
    differs.
    """
    import torch

    missing = sorted(set(sd_a) ^ set(sd_b))
    if missing:
        raise ConfigError(f"the two models have different weights (e.g. {missing[0]!r}); SLERP needs two "
                          "models of the same architecture")
    out = {}
    for name, a in sd_a.items():
        b = sd_b[name]
        if a.shape != b.shape:
            raise ConfigError(f"weight {name!r} has shape {tuple(a.shape)} in A but {tuple(b.shape)} in B")
        if a.is_floating_point():
            out[name] = slerp_tensors(a, b, t)
        else:
            if not torch.equal(a, b.to(a.device)):
                raise ConfigError(f"non-float tensor {name!r} differs between the two models")
            out[name] = a.clone()
    return out


def load_plain(path: str | os.PathLike):
    """Load a model, adapter or ST folder as a FastSentenceTransformer in fp32 with no adapter attached
    (an adapter is merged into a fresh copy of its base). Raises ModelLoadError for a missing folder."""
    from embtune.models import FastSentenceTransformer
    from embtune.models.merging import merged_transformer

    if not Path(path).exists():
        raise ModelLoadError("model folder does not exist", path=path)
    model = FastSentenceTransformer.from_pretrained(str(path), dtype="fp32", device="cpu")
    if model.has_adapter():
        model[0].model = merged_transformer(model[0].model)
    model.eval()
    return model


def slerp_models(path_a: str | os.PathLike, path_b: str | os.PathLike, t: float,
                 out_dir: str | os.PathLike) -> Path:
    """Merge two models by SLERP of each weight tensor and save a plain ST folder to ``out_dir``.

    In: two model/adapter/ST folders of the same architecture, ``t`` in [0, 1] (0 = A, 1 = B), the
    output folder. Out: ``out_dir`` (written atomically, with A's tokenizer, pooling and prompts).
    Raises ConfigError for t out of range or mismatched models, ModelLoadError for a missing folder.
    """
    if not (isinstance(t, (int, float)) and 0.0 <= t <= 1.0):
        raise ConfigError(f"--t must be between 0 and 1, got {t!r}")
    for path in (path_a, path_b):
        if not Path(path).exists():
            raise ModelLoadError("model folder does not exist", path=path)
    model_a = load_plain(path_a)
    model_b = load_plain(path_b)
    merged = slerp_state_dicts(model_a[0].model.state_dict(), model_b[0].model.state_dict(), float(t))
    model_a[0].model.load_state_dict(merged)
    model_a.save(str(out_dir))
    return Path(out_dir)
