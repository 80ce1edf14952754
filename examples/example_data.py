"""Shared by the integration examples: which model to use and a small SciFact task to try it on.

The default model is the one ``make demo`` fine-tuned (``runs/demo/merged`` for the from-corpus
demo, ``runs/demo/lora/merged`` for ``examples/scifact_finetune.py``); when neither exists the
embedded all-MiniLM-L6-v2 is used.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "scifact"
DEMO_MODELS = (ROOT / "runs" / "demo" / "merged", ROOT / "runs" / "demo" / "lora" / "merged")


def default_model() -> str:
    """Folder of the demo's fine-tuned model if it exists, else the embedded MiniLM's folder."""
    for folder in DEMO_MODELS:
        if (folder / "modules.json").is_file() or (folder / "config.json").is_file():
            return str(folder)
    from embtune.models.names import default_model_path

    return default_model_path()


def small_task(data: str | os.PathLike, n_queries: int, max_docs: int, split: str = "test"):
    """``(corpus, titles, queries, qrels)`` of the first ``n_queries`` judged queries of ``split``
    over their relevant documents plus others up to ``max_docs`` (0: the whole corpus)."""
    from embtune.data import load_beir

    beir = load_beir(data)
    qrels = dict(list(beir.split_qrels(split).items())[:n_queries])
    relevant = list(dict.fromkeys(d for docs in qrels.values() for d in docs))
    if max_docs:
        others = [d for d in beir.corpus if d not in set(relevant)]
        ids = relevant + others[: max(0, max_docs - len(relevant))]
    else:
        ids = list(beir.corpus)
    corpus = {d: beir.corpus[d] for d in ids}
    return corpus, {d: beir.titles.get(d, "") for d in ids}, {q: beir.queries[q] for q in qrels}, qrels
