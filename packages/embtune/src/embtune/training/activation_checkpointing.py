"""Activation (gradient) checkpointing for one training run: transformers' own, on for the run, off after.

With ``TrainConfig(gradient_checkpointing=True)`` the loop switches on transformers' checkpointing
of every repeated block (``GradientCheckpointingLayer``: BertLayer, Qwen3DecoderLayer, ...) of the
Hugging Face model(s) inside the embedder or reranker: a block keeps only its input during the
forward and is run a second time during the backward to rebuild what its backward needs. Memory of
activations drops from every intermediate tensor of every layer to one hidden state per layer; a
step costs about one more forward. Off by default.

* Non-reentrant (``use_reentrant=False``): keyword arguments pass straight through, so the packed
  forward's ``cu_seq_lens_q``, ``max_length_q`` and ``embtune_plan`` (`embtune.models.fast_transformer`)
  reach the recomputed layer unchanged; it needs no input that requires grad (frozen embeddings
  under LoRA/QLoRA are fine) and works with PEFT's LoRA layers and bitsandbytes 4-bit layers.
* Same numbers: torch restores the RNG state for the recompute, so dropout masks (our
  `embtune.models.fast_dropout` draws its seed from torch's generator) are the same; losses and
  gradients equal those without checkpointing (``tests/training/test_activation_checkpointing.py``:
  BERT with dropout and Qwen3, LoRA and QLoRA). It is therefore not part of a run's checkpoint
  fingerprint: a run may be resumed with it switched on or off.
* What runs inside a layer must save the same tensors in the recompute as in the forward (torch
  checks). Work done once on first use inside a layer, such as a timing that runs its own backward,
  must keep its tensors out of the checkpoint's saved-tensor hooks (e.g. under
  ``torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)``), or the recompute fails.
* Scoped: `activation_checkpointing` restores each model's previous state on exit (also on error),
  so ``encode`` and evaluation after training run exactly as before. During training, evaluation
  runs in eval mode, where transformers does not checkpoint.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from embtune.errors import ConfigError

CHECKPOINT_KWARGS = {"use_reentrant": False}
"""What ``torch.utils.checkpoint.checkpoint`` gets (see the module docstring)."""


def transformers_models(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost transformers ``PreTrainedModel`` modules inside ``model`` (or ``model`` itself).

    In: an ST model, a CrossEncoder or a transformers model. Out: the list, in module order (one for
    every embedder and reranker embtune builds); empty when ``model`` holds none.
    """
    from transformers import PreTrainedModel

    found: list[torch.nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside or not isinstance(module, PreTrainedModel):
            continue
        found.append(module)
        inside.update(id(m) for m in module.modules())
    return found


def is_checkpointing(hf_model: torch.nn.Module) -> bool:
    """Whether any module of ``hf_model`` has transformers' ``gradient_checkpointing`` flag set.

    In: a transformers model. Out: bool (the test transformers' own ``is_activation_checkpointing``
    property makes, under a name that does not depend on the transformers version).
    """
    return any(getattr(m, "gradient_checkpointing", False) is True for m in hf_model.modules())


def checkpointable_models(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformers models of ``model`` that activation checkpointing will be switched on for.

    In: the model handed to ``embtune.train``. Out: `transformers_models` of it. Raises ConfigError
    when there is none, or when one does not support checkpointing (``supports_gradient_checkpointing``
    False, e.g. MPNet), so ``gradient_checkpointing=True`` never silently does nothing.
    """
    models = transformers_models(model)
    if not models:
        raise ConfigError("TrainConfig.gradient_checkpointing needs a transformers model inside the model "
                          f"to train; {type(model).__name__} holds none")
    for hf_model in models:
        if not getattr(hf_model, "supports_gradient_checkpointing", False):
            name = type(hf_model).__name__
            raise ConfigError(f"TrainConfig.gradient_checkpointing: {name} does not support activation "
                              "checkpointing in transformers; train without it")
    return models


def enable(hf_model: torch.nn.Module) -> None:
    """Switch on non-reentrant activation checkpointing of ``hf_model`` (a transformers model).

    Calls ``activation_checkpointing_enable`` (transformers 5.x) or, where that name does not exist
    yet, its older alias ``gradient_checkpointing_enable``. transformers also adds a forward hook that
    makes the input embeddings' output require grad (``enable_input_require_grads``); `disable` removes it.
    """
    if hasattr(hf_model, "activation_checkpointing_enable"):
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(CHECKPOINT_KWARGS))
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINT_KWARGS))


def disable(hf_model: torch.nn.Module) -> None:
    """Switch off activation checkpointing of ``hf_model`` and remove the input-grad hook `enable` added.

    In: a transformers model `enable` was called on. Out: None.
    """
    if hasattr(hf_model, "activation_checkpointing_disable"):
        hf_model.activation_checkpointing_disable()
    else:
        hf_model.gradient_checkpointing_disable()
    hf_model.disable_input_require_grads()  # transformers removes it only for PEFT models; a no-op if gone


@contextlib.contextmanager
def activation_checkpointing(model: torch.nn.Module, enabled: bool = True) -> Iterator[list[torch.nn.Module]]:
    """Run the block with activation checkpointing on in every transformers model of ``model``.

    In: the model handed to ``embtune.train``; ``enabled=False`` does nothing. Yields the transformers
    models switched on by this call (those already checkpointing are left as they are, and stay on).
    On exit each model switched on here is switched off again. Raises ConfigError as
    `checkpointable_models` does.
    """
    if not enabled:
        yield []
        return
    switched = [m for m in checkpointable_models(model) if not is_checkpointing(m)]
    try:
        for hf_model in switched:
            enable(hf_model)
            if not is_checkpointing(hf_model):
                name = type(hf_model).__name__
                raise ConfigError(f"TrainConfig.gradient_checkpointing: {name} has no layer that "
                                  "transformers checkpoints; train without it")
        yield switched
    finally:
        for hf_model in switched:
            if is_checkpointing(hf_model):
                disable(hf_model)
