"""LoRA / QLoRA adapters on a reranker, and saving one (merged by default) atomically.

The adapter is PEFT's, attached with sentence-transformers' ``add_adapter`` like the embedder's.
An encoder reranker's score head (``classifier`` / ``score`` / ``head``) is trained in full beside
the adapter (PEFT ``modules_to_save``): a fresh head has nothing to adapt. A decoder reranker keeps
its LM head frozen; ``LogitScore`` reads the "yes"/"no" logits through the adapted body.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from embtune.errors import ConfigError
from embtune.models import loading
from embtune.models.architectures import lora_target_modules
from embtune.utils.atomic import atomic_dir

HEAD_NAMES = ("classifier", "score", "head")


def hf_model_of(model: Any) -> torch.nn.Module:
    """The Hugging Face model inside a CrossEncoder (its first module's ``model``)."""
    return model[0].model


def head_modules(hf_model: torch.nn.Module) -> list[str]:
    """Names of the top-level score-head modules of a sequence-classification model ([] for a causal LM)."""
    if type(hf_model).__name__.endswith("ForCausalLM"):
        return []
    return [name for name, _ in hf_model.named_children() if name in HEAD_NAMES]


def add_lora(model: Any, r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0,
             target_modules: str | list[str] = "all-linear", random_state: int = 3407, **lora_kwargs: Any) -> Any:
    """Attach a PEFT LoRA adapter to a reranker (QLoRA when it was loaded in 4-bit); returns the model.

    In: a CrossEncoder from `load_reranker`; LoRA rank, alpha, dropout; ``target_modules``
    ("all-linear": every linear layer of the body, heads excluded; or a list of names); the seed of
    the adapter's initialisation; further ``peft.LoraConfig`` arguments. Out: the same model, with
    only the LoRA weights (fp32) and an encoder's score head requiring grad.
    """
    from peft import LoraConfig

    if r <= 0 or lora_alpha <= 0:
        raise ConfigError(f"LoRA needs r > 0 and lora_alpha > 0 (got r={r}, lora_alpha={lora_alpha})")
    hf = hf_model_of(model)
    if getattr(hf, "is_loaded_in_4bit", False):
        loading.prepare_4bit_for_training(hf)
    heads = head_modules(hf)
    config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                        target_modules=lora_target_modules(hf, target_modules),
                        modules_to_save=heads or None, **lora_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model.add_adapter(config)
    for name, param in model.named_parameters():
        trainable = "lora_" in name or ".modules_to_save." in name
        if trainable:
            param.data = param.data.float()
        param.requires_grad_(trainable)
    return model


def has_adapter(model: Any) -> bool:
    """True when a PEFT adapter is attached to the reranker's transformer."""
    return bool(getattr(hf_model_of(model), "_hf_peft_config_loaded", False))


def save_reranker(model: Any, path: str | os.PathLike, *, merged: bool = True) -> None:
    """Save a reranker folder atomically (``path`` appears complete or not at all).

    In: the CrossEncoder; ``merged`` (default) writes the full model with any adapter merged in (the
    base reloaded in fp32, dequantised for QLoRA, PEFT's safe merge): a plain ST CrossEncoder folder
    (``config.json`` of a ``*ForSequenceClassification`` or ``*ForCausalLM``) that ST, TEI and our
    exporters load. ``merged=False`` writes ST's adapter-only folder. Out: None.
    """
    from embtune.models.merging import merged_transformer

    transformer = model[0]
    live = transformer.model
    swap = merged and has_adapter(model)
    with atomic_dir(path) as tmp:
        if swap:
            transformer.model = merged_transformer(live)
        try:
            model.save(str(tmp))
        finally:
            transformer.model = live
