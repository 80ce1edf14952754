"""Named choices of the training options (losses, LoRA arithmetic), importable without torch.

The command line checks ``--loss`` and ``--lora-compute`` while it parses options, before it knows
whether the command will train at all; this module lets it do so without importing torch, PEFT or
bitsandbytes. The losses live in `embtune.losses` (its registry is keyed by these names) and the
LoRA arithmetic in `embtune.models.fast_lora`.
"""
from __future__ import annotations

from embtune.errors import ConfigError

#: How a LoRA branch computes (`embtune.models.fast_lora`): "exact" is PEFT's fp32 arithmetic,
#: "bf16" the base's dtype with fp32 LoRA weights, "peft" PEFT's own layer.
LORA_COMPUTE_MODES = ("exact", "bf16", "peft")

#: loss name -> (class name in `embtune.losses`, fixed constructor arguments); aliases included.
LOSS_SPECS: dict[str, tuple[str, dict]] = {
    "infonce": ("InfoNCELoss", {}),
    "mnrl": ("InfoNCELoss", {}),
    "infonce_symmetric": ("InfoNCELoss", {"symmetric": True}),
    "cached_infonce": ("CachedInfoNCELoss", {}),
    "gradcache": ("CachedInfoNCELoss", {}),
    "cosent": ("CoSENTLoss", {}),
    "cosine_mse": ("CosineMSELoss", {}),
    "triplet": ("TripletLoss", {}),
}

#: The names `embtune.losses.get_loss` accepts (aliases included).
LOSS_NAMES: tuple[str, ...] = tuple(LOSS_SPECS)


def loss_key(name: str) -> str:
    """The registry name of loss ``name``: lower case, ``-`` read as ``_`` (``"CoSENT"`` -> ``"cosent"``).

    Raises ConfigError listing the valid names when ``name`` is not one of :data:`LOSS_NAMES`.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSS_SPECS:
        raise ConfigError(f"Unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}.")
    return key
