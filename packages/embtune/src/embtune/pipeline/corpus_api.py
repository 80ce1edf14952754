"""The pipeline's only contact with the stage library (``embtune.corpus``, ``embtune.pairs``).

The library works on its own objects (Document, Chunk, Pair, EvalQuery); the pipeline stores JSON
records (``records.CHUNK_FIELDS`` / ``PAIR_FIELDS`` / ``EVAL_FIELDS``). These wrappers convert on
the way in and out, so the stage functions in ``stages.py`` handle plain dicts only.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from embtune.pipeline.settings import RunSettings


def _chunks(records: Sequence[dict[str, Any]]) -> list[Any]:
    from embtune.corpus.types import Chunk

    return [Chunk.from_dict(r) for r in records]


def _pairs(records: Sequence[dict[str, Any]]) -> list[Any]:
    from embtune.pairs.types import Pair

    return [Pair.from_dict(r) for r in records]


def _dicts(objects: Sequence[Any]) -> list[dict[str, Any]]:
    return [o.to_dict() for o in objects]


def read_documents(corpus: Path, warn: Callable[[str], None], show_progress: bool = True,
                   empty: list[str] | None = None) -> list[Any]:
    """Documents under ``corpus`` (``embtune.corpus.ingest.read_documents``); ``warn`` gets skip notes,
    ``empty`` (when given) the ids of documents without text."""
    from embtune.corpus.ingest import read_documents as read

    return read(corpus, warn, show_progress=show_progress, empty=empty)


def chunk_documents(docs: list[Any], tokenizer: Any, max_tokens: int, overlap: int,
                    show_progress: bool = True) -> list[Any]:
    """Chunks of ``docs`` (``embtune.corpus.chunking.chunk_documents``)."""
    from embtune.corpus.chunking import chunk_documents as chunk

    return chunk(docs, tokenizer, max_tokens, overlap, show_progress=show_progress)


def max_tokens_for(model: Any) -> int:
    """Content tokens that fit one document in ``model``'s window (special tokens and prompt excluded)."""
    from embtune.corpus.chunking import max_tokens_for as budget

    return budget(model)


def encode_chunk_texts(model: Any, texts: Sequence[str], lengths: Any = None,
                       show_progress: bool = True) -> np.ndarray:
    """Document embeddings of chunk texts (a list, or ``records.ChunkTexts`` reading them from
    chunks.jsonl), batch by batch (``embtune.models.inference.encode_texts``): float32 [n, dim], rows
    of norm 1. ``lengths``: the texts' sort keys when known (``ChunkTexts.lengths``)."""
    from embtune.models.inference import encode_texts
    from embtune.pairs.embeddings import BATCH_SIZE

    return encode_texts(model, texts, "document", batch_size=BATCH_SIZE, show_progress=show_progress, lengths=lengths)


def build_pairs(builder: str, chunks: Sequence[dict[str, Any]], s: "RunSettings", model: Any,
                embeddings: np.ndarray, show_progress: bool = True, *, signals: Sequence[str] | None = None,
                empty_doc_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Pair records built from ``chunks`` by ``builder`` (labels, heuristic or llm; see ``embtune.pairs``).

    ``signals``: the heuristic signals (None: ``HeuristicPairs``' defaults); ``empty_doc_ids``: documents
    without text that labels may name (their judgements give no pair; ``LabelPairs``)."""
    objects = _chunks(chunks)
    if builder == "labels":
        from embtune.pairs.labels import LabelPairs

        made = LabelPairs(s.queries, s.labels, show_progress=show_progress,
                          empty_doc_ids=empty_doc_ids).build(objects, model, embeddings)
    elif builder == "heuristic":
        from embtune.pairs.heuristic import DEFAULT_SIGNALS, HeuristicPairs

        made = HeuristicPairs(signals or DEFAULT_SIGNALS, seed=s.seed, show_progress=show_progress).build(objects)
    elif builder == "llm":
        from embtune.pairs.llm import LLMPairs

        local = {"gguf": s.llm_gguf} if s.llm_gguf is not None else {}
        made = LLMPairs(s.llm_url, s.llm_model, show_progress=show_progress, **local).build(objects)
    else:
        raise ValueError(f"unknown pair builder {builder!r}")
    return _dicts(made)


def filter_pairs(pairs: Sequence[dict[str, Any]], model: Any, chunks: Sequence[dict[str, Any]], top_k: int | None,
                 dedup_cosine: float | None, embeddings: np.ndarray, show_progress: bool = True,
                 min_cosine: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``embtune.pairs.filtering.filter_pairs`` on records; returns (kept records, statistics dict)."""
    from embtune.pairs.filtering import filter_pairs as run

    kept, stats = run(_pairs(pairs), model, _chunks(chunks), top_k, min_cosine, dedup_cosine=dedup_cosine,
                      embeddings=embeddings, show_progress=show_progress)
    return _dicts(kept), stats.to_dict()


def split_by_document(pairs: Sequence[dict[str, Any]], eval_fraction: float, seed: int,
                      eval_builders: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``embtune.pairs.split.split_by_document`` on records: (training pair records, eval query records);
    ``eval_builders``: the builders whose queries may be eval queries (None: the library's default)."""
    from embtune.pairs.split import split_by_document as split

    train, held_out = split(_pairs(pairs), eval_fraction, seed, eval_builders=eval_builders)
    return _dicts(train), _dicts(held_out)


def mine_hard_negatives(pairs: Sequence[dict[str, Any]], model: Any, chunks: Sequence[dict[str, Any]], n: int,
                        skip_top: int, margin: float, embeddings: np.ndarray, exclude_doc_ids: Sequence[str],
                        show_progress: bool = True) -> list[dict[str, Any]]:
    """``embtune.pairs.negatives.mine_hard_negatives`` on records; returns pair records with negatives."""
    from embtune.pairs.negatives import mine_hard_negatives as mine

    mined = mine(_pairs(pairs), model, _chunks(chunks), n, skip_top, margin, embeddings,
                 exclude_doc_ids=set(exclude_doc_ids), show_progress=show_progress)
    return _dicts(mined)
