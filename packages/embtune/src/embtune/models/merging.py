"""Merging a LoRA adapter into its base: PEFT's merge on freshly loaded fp32 base weights.

The live model keeps training-time weights (bf16 or nf4) and the adapter unmerged. A merge must
not disturb it, and must be exact, so the base is loaded again from its source in fp32 — for
QLoRA with the same nf4 quantisation and then dequantised, so the merged weights equal exactly what
the adapter was trained against — and PEFT applies the adapter with ``merge_and_unload(safe_merge=True)``.
"""
from __future__ import annotations

import copy

import torch

from embtune.errors import EmbtuneError


def _active_adapter(hf_model: torch.nn.Module) -> str:
    active = hf_model.active_adapters()
    if len(active) != 1:
        raise EmbtuneError(f"merging needs exactly one active adapter, found {active}")
    return active[0]


def adapter_base(hf_model: torch.nn.Module) -> str:
    """Folder or hub id of the base model that ``hf_model``'s active adapter was trained on."""
    config = hf_model.peft_config[_active_adapter(hf_model)]
    return config.base_model_name_or_path or hf_model.name_or_path


def load_base_fp32(hf_model: torch.nn.Module, base_path: str) -> torch.nn.Module:
    """Load the base of ``hf_model`` from ``base_path`` in fp32, dequantising nf4 when it was 4-bit.

    An embedder's backbone (``*Model``) reloads with ``AutoModel``; a model with a task head (a
    reranker's ``*ForSequenceClassification`` / ``*ForCausalLM``) reloads as its own class with its
    own config, so a head the base folder lacks (a fresh reranker head) gets the live head's shape.
    """
    from transformers import AutoModel

    kwargs = {"dtype": torch.float32, "use_safetensors": True}
    loader = AutoModel
    if not type(hf_model).__name__.endswith("Model"):
        loader = type(hf_model)
        config = copy.deepcopy(hf_model.config)
        for key in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, key):
                delattr(config, key)
        kwargs["config"] = config
    if getattr(hf_model, "is_loaded_in_4bit", False):
        kwargs["quantization_config"] = copy.deepcopy(hf_model.config.quantization_config)
        kwargs["device_map"] = {"": "cpu"}
        base = loader.from_pretrained(base_path, **kwargs)
        base = base.dequantize()
        return base.to(torch.float32)
    return loader.from_pretrained(base_path, **kwargs)


def merged_transformer(hf_model: torch.nn.Module) -> torch.nn.Module:
    """Return a new fp32 Hugging Face model equal to ``hf_model``'s base with its adapter merged in.

    ``hf_model`` is a transformers model with a PEFT adapter attached (ST's ``add_adapter``). The
    result holds no LoRA modules. Raises EmbtuneError if the merged weights are not finite.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    name = _active_adapter(hf_model)
    config = copy.deepcopy(hf_model.peft_config[name])
    base_path = adapter_base(hf_model)
    # transformers' adapter state dict names keys relative to the HF model; a PeftModel expects
    # them under its ``base_model.model.`` prefix.
    state = {f"base_model.model.{k}": v.detach().to(torch.float32)
             for k, v in hf_model.get_adapter_state_dict(name).items()}
    base = load_base_fp32(hf_model, base_path)
    config.inference_mode = True
    peft_model = get_peft_model(base, config)
    result = set_peft_model_state_dict(peft_model, state)
    if result.unexpected_keys:
        raise EmbtuneError(f"adapter weights do not fit the base model: {result.unexpected_keys[:3]}")
    try:
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as exc:
        raise EmbtuneError(f"merging the adapter gave non-finite weights ({exc})") from None
    merged.config.dtype = torch.float32
    return merged.to(hf_model.device).eval()
