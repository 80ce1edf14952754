"""Training: ``train(model, data, loss, config, eval_data) -> TrainResult`` with ``TrainConfig``.

See ``embtune.training.loop`` for why embtune runs its own lean loop and what one step does.
``train`` is imported on first use (PEP 562), so reading ``TrainConfig``'s defaults (the CLI does)
does not import torch.
"""
from embtune.lazy import lazy_exports
from embtune.training.config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult", "train"]
__getattr__ = lazy_exports(__name__, {"train": "embtune.training.loop"})
