"""Tiny random-init encoder rerankers whose scores are spread out (for order and parity checks).

`build_tiny_reranker` writes a tiny `tiny_models.build_tiny_hf` backbone, loads it with
`embtune.rerankers.load_reranker` (fresh one-logit head), redraws every linear layer with
``N(0, 1/in_features)`` weights (random-init BERTs use std 0.02, which makes every pair score almost
the same: an order test would then compare noise) and saves it with `save_reranker`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import build_tiny_hf


def spread_weights(model, seed: int = 0) -> None:
    """Redraw every ``nn.Linear`` of the reranker's HF model: weights ``N(0, 1/in_features)``, biases
    ``N(0, 0.1^2)``, from a generator seeded with ``seed`` (the global RNG is untouched)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model[0].model.modules():
            if isinstance(module, torch.nn.Linear):
                weight = torch.randn(module.weight.shape, generator=gen) / module.in_features ** 0.5
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)


def build_tiny_reranker(folder: str | Path, family: str = "bert", seed: int = 0,
                        max_length: int | None = None) -> Path:
    """Write a tiny ``family`` reranker (hidden 32, spread weights) as a saved CrossEncoder folder under
    ``folder``; returns the reranker folder (``folder/"reranker"``)."""
    from embtune.rerankers import load_reranker, save_reranker

    folder = Path(folder)
    dropout = {"dropout": 0.0} if family == "bert" else {}
    backbone = build_tiny_hf(folder / "backbone", family, seed=seed, hidden_size=32, **dropout)
    model = load_reranker(backbone, device="cpu", dtype=torch.float32, max_length=max_length)
    spread_weights(model, seed)
    save_reranker(model, folder / "reranker")
    return folder / "reranker"


#: Training rows of the reranker tests: (query, positive, negative, negative).
TRAIN_ROWS = [
    ("what does vacuum do", "VACUUM rebuilds the database file.", "Bananas are yellow.", "The sun is hot."),
    ("is sqlite serverless", "SQLite has no separate server process.", "Cats sleep a lot.", "Rain is wet."),
    ("how big can a database be", "The maximum database size is 281 TB.", "Paris is in France.", "Tea is hot."),
    ("what is a savepoint", "A SAVEPOINT marks a point in a transaction.", "Dogs bark.", "Snow is cold."),
]

#: Candidate texts and a query of the plug-in tests (LangChain compressor, LlamaIndex postprocessor).
RERANK_TEXTS = ["Protein folding is driven by hydrophobic collapse.", "Mitosis splits one cell into two.",
                "Moderate coffee intake shows no cardiac harm.", "OCA2 variants largely set eye colour.",
                "Chaperones help proteins reach their native fold.", "Meiosis halves the chromosome number.",
                "Caffeine raises blood pressure for a few hours.", "Melanin levels set skin and eye colour."]
RERANK_QUERY = "how do proteins fold"
