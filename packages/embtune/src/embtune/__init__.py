"""embtune: fine-tune embedding models on your own documents, fast, and prove retrieval got better.

The public API is imported lazily so that ``embtune --help`` and ``import embtune`` stay quick::

    from embtune import FastSentenceTransformer, train, TrainConfig, evaluate_retrieval, load_beir
"""
from __future__ import annotations

from embtune.lazy import lazy_exports


__version__ = "0.1.0"

_EXPORTS = {
    "FastSentenceTransformer": "embtune.models",
    "train": "embtune.training",
    "TrainConfig": "embtune.training",
    "TrainResult": "embtune.training",
    "evaluate_retrieval": "embtune.eval",
    "load_beir": "embtune.data",
    "load_pairs": "embtune.data",
    "get_loss": "embtune.losses",
    "EmbtuneError": "embtune.errors",
}
__all__ = [*_EXPORTS, "__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
