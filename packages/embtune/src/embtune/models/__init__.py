"""Model loading, PEFT adapters and merged saving.

``FastSentenceTransformer`` is imported on first use (PEP 562), so the light modules of this package
(``embtune.models.names``) load without torch: the command line resolves model names while it parses.
"""
from __future__ import annotations

from embtune.lazy import lazy_exports

__all__ = ["FastSentenceTransformer"]
__getattr__ = lazy_exports(__name__, {"FastSentenceTransformer": "embtune.models.fast_sentence_transformer"})
