"""Fixtures of the reranker tests: tiny random-init encoder and decoder rerankers saved once per session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_decoder_reranker, build_tiny_hf, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls gain nothing from threads; one thread keeps these tests fast and stable."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_encoder_reranker(tmp_path_factory) -> Path:
    """A saved CrossEncoder folder: a tiny random BERT (hidden 32, no dropout) with a fresh one-logit head."""
    from embtune.rerankers import load_reranker, save_reranker

    root = tmp_path_factory.mktemp("tiny-rerankers")
    backbone = build_tiny_hf(root / "bert", "bert", hidden_size=32, dropout=0.0)  # deterministic in train mode
    torch.manual_seed(0)
    model = load_reranker(backbone, device="cpu", max_length=64)
    folder = root / "encoder-reranker"
    save_reranker(model, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_decoder_backbone(tmp_path_factory) -> Path:
    """A tiny random Qwen3 causal LM whose tokenizer has "yes" and "no" tokens (plain HF folder)."""
    return Path(build_tiny_decoder_reranker(tmp_path_factory.mktemp("tiny-decoder") / "qwen3"))


TRAIN_ROWS = [
    ("what does vacuum do", "VACUUM rebuilds the database file.", "Bananas are yellow.", "The sun is hot."),
    ("is sqlite serverless", "SQLite has no separate server process.", "Cats sleep a lot.", "Rain is wet."),
    ("how big can a database be", "The maximum database size is 281 TB.", "Paris is in France.", "Tea is hot."),
    ("what is a savepoint", "A SAVEPOINT marks a point in a transaction.", "Dogs bark.", "Snow is cold."),
]
