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

from embtune.lazy import lazy_exports


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


__getattr__ = lazy_exports(__name__, _EXPORTS)
