"""Adapter strength: the weights of a fine-tuned model moved part of the way back to its base.

For every floating-point weight tensor, in fp32::

    W(alpha) = W_base + alpha * (W_tuned - W_base)        (``torch.lerp``)

``alpha = 0`` gives the base model's weights exactly and ``alpha = 1`` the tuned model's exactly.
For a LoRA adapter ``W_tuned`` is the adapter merged into its fp32 base (``embtune.models.merging``,
nf4 dequantised for QLoRA), so ``W_tuned - W_base`` is the adapter's delta ``scaling * B @ A`` and
alpha is the LoRA scale; for a fully fine-tuned model alpha interpolates the two weight sets.

``StrengthModel.load`` also takes a training checkpoint (``embtune.training.checkpoint``): its
trainable weights replace those of the saved adapter (or full model), so any kept checkpoint can
be a candidate too. Only the tensors that differ between base and tuned are kept twice in memory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from embtune.errors import ConfigError, EmbtuneError


def load_trainable(model: torch.nn.Module, checkpoint: str | os.PathLike) -> int:
    """Copy a checkpoint's ``trainable.safetensors`` into ``model``'s parameters of the same names.

    Parameters the loss owned (``loss.*``) are skipped. Returns how many tensors were copied. Raises
    EmbtuneError naming the checkpoint when it cannot be read or holds a weight the model lacks.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(checkpoint) / "trainable.safetensors"
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise EmbtuneError(f"cannot read the checkpoint weights ({exc})", path=path) from None
    params = dict(model.named_parameters())
    weights = {k: v for k, v in weights.items() if not k.startswith("loss.")}
    foreign = [k for k, v in weights.items() if k not in params or params[k].shape != v.shape]
    if foreign:
        raise EmbtuneError(f"checkpoint weight {foreign[0]!r} does not fit the trained model", path=path)
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].dtype))
    return len(weights)


class StrengthModel:
    """A plain fp32 FastSentenceTransformer whose transformer weights can be set to any strength."""

    def __init__(self, model: Any, base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor]):
        """Wrap ``model`` (a plain model, no adapter) with the ``base`` and ``tuned`` values of the
        transformer tensors that differ between them (same keys); use ``StrengthModel.load``."""
        self.model, self.base, self.tuned = model, base, tuned
        self.strength: float | None = None

    @property
    def changed(self) -> int:
        """How many tensors differ between the base and the tuned model."""
        return len(self.base)

    @classmethod
    def load(cls, weights: str | os.PathLike, base_source: str | None = None,
             checkpoint: str | os.PathLike | None = None, qlora: bool = False, device: str | None = None,
             **options: Any) -> "StrengthModel":
        """Load the tuned model of ``weights`` (an adapter folder, or a full model folder) and its base.

        In: ``base_source``, the base model folder or hub id (needed for a full model; an adapter
        names its own base); ``checkpoint``, a training checkpoint folder whose trainable weights
        replace the saved ones; ``qlora``: the adapter was trained on a 4-bit base; ``options``: further
        ``FastSentenceTransformer.from_pretrained`` arguments (max_seq_length, trust_remote_code...).
        Out: a StrengthModel at strength 1 (the tuned model). Raises EmbtuneError for a checkpoint that
        does not fit, ConfigError for a full model without ``base_source``.
        """
        from embtune.models import FastSentenceTransformer
        from embtune.models.merging import adapter_base, load_base_fp32, merged_transformer

        model = FastSentenceTransformer.from_pretrained(str(weights), dtype="fp32", load_in_4bit=qlora,
                                                        device=device, **options)
        if checkpoint is not None:
            load_trainable(model, checkpoint)
        live = model[0].model
        if model.has_adapter():
            base_hf = load_base_fp32(live, adapter_base(live)).to(live.device)
            model[0].model = merged_transformer(live)
        else:
            if base_source is None:
                raise ConfigError("interpolating a fully trained model needs its base model (base_source)")
            base_hf = FastSentenceTransformer.from_pretrained(base_source, dtype="fp32", device=device,
                                                              **options)[0].model
        del live
        tuned_sd = model[0].model.state_dict()
        base_sd = base_hf.state_dict()
        missing = sorted(k for k in tuned_sd if tuned_sd[k].is_floating_point() and k not in base_sd)
        if missing:
            raise EmbtuneError(f"the tuned model has weight {missing[0]!r} that its base lacks", path=weights)
        base, tuned = {}, {}
        for key, value in tuned_sd.items():
            if not value.is_floating_point():
                continue
            start = base_sd[key].to(device=value.device, dtype=torch.float32)
            if start.shape != value.shape:
                raise EmbtuneError(f"weight {key!r} has another shape in the base model", path=weights)
            if not torch.equal(start, value.float()):
                base[key], tuned[key] = start, value.detach().float().clone()
        del base_hf, base_sd
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        out = cls(model, base, tuned)
        out.strength = 1.0
        return out

    def set_strength(self, alpha: float) -> Any:
        """Set every differing weight to ``base + alpha * (tuned - base)``; returns the model.

        ConfigError unless ``0 <= alpha <= 1``.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"adapter strength must be between 0 and 1, got {alpha!r}")
        state = self.model[0].model.state_dict()  # tensors sharing the model's storage
        with torch.no_grad():
            for key, start in self.base.items():
                state[key].copy_(torch.lerp(start, self.tuned[key], float(alpha)).to(state[key].dtype))
        self.strength = float(alpha)
        return self.model

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model at its current strength as a plain sentence-transformers folder, atomically."""
        self.model.save(str(path))
        return Path(path)
