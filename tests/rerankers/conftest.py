"""Fixtures of the reranker tests: tiny random-init encoder and decoder rerankers saved once per session."""
from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import build_tiny_decoder_reranker, torch_threads
from tiny_rerankers import build_tiny_reranker


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matmuls gain nothing from threads; one thread keeps these tests fast and stable."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_encoder_reranker(tmp_path_factory) -> Path:
    """A saved CrossEncoder folder: a tiny random BERT (hidden 32, no dropout, so train mode is
    deterministic) with a one-logit head, weights spread so that pair scores differ (`tiny_rerankers`)."""
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-rerankers"), "bert", max_length=64)


@pytest.fixture(scope="session")
def tiny_decoder_backbone(tmp_path_factory) -> Path:
    """A tiny random Qwen3 causal LM whose tokenizer has "yes" and "no" tokens (plain HF folder)."""
    return Path(build_tiny_decoder_reranker(tmp_path_factory.mktemp("tiny-decoder") / "qwen3"))
