"""Fixtures of the model, loss and training tests: a tiny random-init BERT wrapped as a SentenceTransformer.

The backbone (2 layers, hidden 32) comes from ``tiny_models.build_tiny_hf`` (real MiniLM tokenizer,
no download) and is saved once per session. Two copies are saved with identical weights: one with dropout 0 (deterministic)
and one with dropout 0.1 (for tests of RNG replay).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import build_tiny_hf

TINY_DROPOUTS = (0.0, 0.1)


def _save_tiny_backbones(root: Path) -> dict[float, Path]:
    """Save the same random BERT (hidden 32) once per dropout value in ``TINY_DROPOUTS``."""
    return {dropout: Path(build_tiny_hf(root / f"tiny-bert-dropout{dropout}", "bert", hidden_size=32,
                                        dropout=dropout))
            for dropout in TINY_DROPOUTS}


@pytest.fixture(scope="session")
def tiny_st_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """A function ``make(dropout=0.0)`` returning a fresh tiny SentenceTransformer (CPU, train mode).

    Every call loads a new model from the session's saved backbone, so the models share weights but
    not gradients. ``dropout`` must be one of ``TINY_DROPOUTS``. The modules are
    ``[Transformer, Pooling(32, "mean"), Normalize()]``; the embedding size is 32.
    """
    folders = _save_tiny_backbones(tmp_path_factory.mktemp("tiny-st"))

    def make(dropout: float = 0.0):
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        transformer = Transformer(str(folders[dropout]), max_seq_length=64)
        pooling = Pooling(transformer.get_embedding_dimension(), "mean")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
        model.train()
        return model

    return make
