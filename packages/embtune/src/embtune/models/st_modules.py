"""The sentence-transformers modules after the transformer (Dense heads, Normalize) of a loaded folder.

sentence-transformers casts every module after the first to the transformer's dtype when it loads a
folder, so a model loaded in bf16 holds bf16 copies of fp32 Dense heads (EmbeddingGemma's 768→3072→768
projection). Those heads stay frozen under LoRA (only adapters train; full fine-tuning trains them),
so a save must write the folder's own fp32 weights, not their bf16 rounding: `read_tail_fp32` keeps
the fp32 weights at load time and `fp32_tail` puts them back into the modules while a save runs.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def tail_modules(model: Any) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` for every module after the first (Transformer) one, in order."""
    return list(model._modules.items())[1:]


def read_tail_fp32(folder: str, model: Any) -> dict[str, dict[str, torch.Tensor]]:
    """fp32 weights, read from ``folder``'s files, of the tail modules ``model`` holds in a lower precision.

    In: a sentence-transformers folder (``modules.json`` names each module's subfolder) and the model
    loaded from it. Out: ``{module name: state dict in fp32}`` for modules with a
    ``model.safetensors`` whose keys match the live module and whose live weights are not fp32;
    empty when everything is fp32 already.
    """
    from safetensors.torch import load_file

    modules_file = Path(folder) / "modules.json"
    if not modules_file.is_file():
        return {}
    paths = {str(entry.get("name")): str(entry.get("path", ""))
             for entry in json.loads(modules_file.read_text(encoding="utf-8"))}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in tail_modules(model):
        params = list(module.parameters())
        weights = Path(folder) / paths.get(name, "\0") / "model.safetensors"
        if not params or all(p.dtype == torch.float32 for p in params) or not weights.is_file():
            continue
        state = load_file(str(weights))
        if set(state) == set(module.state_dict()):
            states[name] = {key: value.float() for key, value in state.items()}
    return states


@contextlib.contextmanager
def fp32_tail(model: Any, states: dict[str, dict[str, torch.Tensor]]) -> Iterator[None]:
    """While the block runs (a save), frozen tail modules hold their fp32 weights from ``states``.

    In: the model and `read_tail_fp32`'s result. A module is swapped only when none of its parameters
    is trainable and its live weights still equal the fp32 ones rounded to the live dtype (it was not
    trained); afterwards it is cast back, which gives the very same low-precision values.
    """
    swapped: list[tuple[torch.nn.Module, torch.dtype]] = []
    try:
        for name, state in states.items():
            module = model._modules.get(name)
            if module is None or any(p.requires_grad for p in module.parameters()):
                continue
            live = module.state_dict()
            unchanged = set(live) == set(state) and all(torch.equal(live[k], v.to(live[k].dtype))
                                                         for k, v in state.items())
            if not unchanged:
                continue
            dtype = next(module.parameters()).dtype
            module.to(torch.float32)
            module.load_state_dict(state)
            swapped.append((module, dtype))
        yield
    finally:
        for module, dtype in swapped:
            module.to(dtype)
