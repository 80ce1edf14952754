"""One call from pairs to a saved reranker: load, attach LoRA (or train every weight), train, save merged.

``embtune train-reranker``, ``from-corpus --reranker`` and the SciFact example all train through
`train_reranker`; the loop itself is ``embtune.train`` (checkpoints in ``out_dir/checkpoints``, a rerun
resumes).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RERANKER = "reranker"
"""The folder under ``out_dir`` that receives the merged reranker."""
FULL_LR, LORA_LR = 3e-5, 2e-4


def train_reranker(data: Any, out_dir: str | os.PathLike, *, base: str | os.PathLike | None = None,
                   loss: str = "listwise", qlora: bool = False, full: bool = False, lora_r: int = 16,
                   lora_alpha: int | None = None, learning_rate: float | None = None, max_length: int | None = 256,
                   instruction: str | None = None, dtype: Any = None, trust_remote_code: bool = False,
                   allow_pickle: bool = False, save_to: str | os.PathLike | None = None, **config: Any):
    """Train a reranker on ``data`` and save it merged to ``save_to`` (default ``out_dir/reranker``).

    In: anything ``embtune.train`` takes as data (pairs with negatives, labelled pairs, a BEIR folder);
    the run folder; ``base`` (None: the embedded MiniLM with a fresh head; see `load_reranker`); the loss
    ("listwise" or "bce"); QLoRA / full fine-tuning / LoRA rank and alpha (default 2 x rank); the peak
    learning rate (default 3e-5 full, 2e-4 LoRA); tokens per pair; a decoder's instruction; load
    options; where to save (None: ``out_dir/reranker``); ``config``: further ``TrainConfig`` fields (epochs, max_steps, batch_size, seed,
    save_steps, logging_steps, show_progress, ...). Out: ``(model, TrainResult, reranker folder)``.
    """
    from embtune.rerankers.adapters import add_lora, save_reranker
    from embtune.rerankers.loading import load_reranker
    from embtune.training import TrainConfig, train

    model = load_reranker(base, max_length=max_length, load_in_4bit=qlora, full_finetuning=full,
                          instruction=instruction, dtype=dtype, trust_remote_code=trust_remote_code,
                          allow_pickle=allow_pickle)
    if not full:
        add_lora(model, r=lora_r, lora_alpha=lora_alpha or 2 * lora_r,
                 random_state=config.get("seed", TrainConfig.seed))
    settings = TrainConfig(output_dir=str(out_dir), learning_rate=learning_rate or (FULL_LR if full else LORA_LR),
                           **config)
    result = train(model, data, loss=loss, config=settings)
    folder = Path(save_to) if save_to is not None else Path(out_dir) / RERANKER
    save_reranker(model, folder)
    return model, result, folder
