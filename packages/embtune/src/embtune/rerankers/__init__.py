"""``embtune.rerankers``: cross-encoder rerankers trained from the embedder's pairs.

A reranker is a sentence-transformers ``CrossEncoder`` (encoder + one-logit head, or a
Qwen3-Reranker-style decoder scoring "yes" vs "no"), so ST code accepts it. Load or build one with
`load_reranker`, attach LoRA with `add_lora` (QLoRA when loaded in 4-bit) or load it with
``full_finetuning=True``, train it with ``embtune.train(model, pairs, loss="listwise" | "bce", config)``
(the embedder's loop: checkpoints, exact resume, multi-process) and save it with `save_reranker`;
`train_reranker` does those four steps in one call.
`rerank` reorders candidates; `embtune.eval.two_stage` measures two-stage retrieval.

Names are imported lazily, so importing this package does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_reranker": "embtune.rerankers.loading",
    "is_reranker": "embtune.rerankers.loading",
    "as_reranker": "embtune.rerankers.loading",
    "add_lora": "embtune.rerankers.adapters",
    "save_reranker": "embtune.rerankers.adapters",
    "train_reranker": "embtune.rerankers.training",
    "get_reranker_loss": "embtune.rerankers.losses",
    "RERANKER_LOSSES": "embtune.rerankers.losses",
    "rerank": "embtune.rerankers.scoring",
    "score_pairs": "embtune.rerankers.scoring",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public name ``name`` from its module on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embtune.rerankers' has no attribute {name!r}")
