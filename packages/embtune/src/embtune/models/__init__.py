"""Model loading, PEFT adapters and merged saving.

``FastSentenceTransformer`` is imported on first use (PEP 562), so the light modules of this package
(``embtune.models.names``) load without torch: the command line resolves model names while it parses.
"""
from __future__ import annotations

from typing import Any

__all__ = ["FastSentenceTransformer"]


def __getattr__(name: str) -> Any:
    if name == "FastSentenceTransformer":
        from embtune.models.fast_sentence_transformer import FastSentenceTransformer

        return FastSentenceTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
