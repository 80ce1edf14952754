"""Fixtures of the from-corpus and CLI tests: a tiny random BERT folder and a small Markdown corpus.

The corpus is 12 SciFact abstracts written as Markdown files (title heading + the abstract split
into paragraphs), small enough that every stage runs in seconds with the tiny model.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import write_corpus
from tiny_models import build_tiny_hf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Folder of a tiny random-init BERT (plain HF layout, MiniLM tokenizer)."""
    return build_tiny_hf(tmp_path_factory.mktemp("tiny-model") / "bert", "bert", seed=0)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A folder of 12 Markdown documents (SciFact abstracts)."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "docs")
