"""Training: ``train(model, data, loss, config, eval_data) -> TrainResult`` with ``TrainConfig``.

See ``embtune.training.loop`` for why embtune runs its own lean loop and what one step does.
"""
from embtune.training.config import TrainConfig, TrainResult
from embtune.training.loop import train

__all__ = ["TrainConfig", "TrainResult", "train"]
