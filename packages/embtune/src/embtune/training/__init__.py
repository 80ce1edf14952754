"""Training: ``train(model, data, loss, config, eval_data) -> TrainResult`` with ``TrainConfig``.

See ``embtune.training.loop`` for why embtune runs its own lean loop and what one step does.
``train`` is imported on first use (PEP 562), so reading ``TrainConfig``'s defaults (the CLI does)
does not import torch.
"""
from typing import Any

from embtune.training.config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    """``train`` from ``embtune.training.loop`` on first access; AttributeError for anything else."""
    if name == "train":
        from embtune.training.loop import train

        return train
    raise AttributeError(f"module 'embtune.training' has no attribute {name!r}")
