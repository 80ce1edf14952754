"""Framework-neutral glue shared by the integrations (LangChain, LlamaIndex, FAISS).

* chunks from other frameworks' records (a LangChain ``Document``, a LlamaIndex node) become
  ``embtune.corpus.Chunk`` objects, so the from-corpus pair builders (``embtune.pairs``) run on them
  unchanged; a record without an id gets the chunker's stable id ``sha256(doc_id, text)``;
* pairs become training data (``embtune.data.PairsData``) that ``embtune.train`` accepts
  (``embtune.data.pairs.pairs_to_training_data``);
* a retriever's answers become ranked id lists scored by ``embtune.eval.metrics.retrieval_metrics``
  (the one metrics implementation); an id returned twice (two chunks of one document mapped to
  the document id) counts once, at its best rank.
"""
from __future__ import annotations

import logging
from typing import Any, Hashable, Iterable, Mapping, Sequence

from embtune.corpus.types import Chunk
from embtune.errors import EmbtuneError

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)


def make_chunk(text: str, *, id: str | None = None, doc_id: str | None = None, title: str = "",
               headings: Sequence[str] = (), source: str = "") -> Chunk:
    """A Chunk of ``text``. ``id`` defaults to the chunker's ``chunk_id(doc_id, text)``; ``doc_id``
    (the source document) defaults to ``source`` or, failing that, to the chunk's own id."""
    from embtune.corpus.chunking import chunk_id

    text = "" if text is None else str(text)
    base = str(doc_id) if doc_id not in (None, "") else (str(source) if source else "")
    cid = str(id) if id not in (None, "") else chunk_id(base, text)
    return Chunk(id=cid, doc_id=base or cid, text=text, title=str(title or ""),
                 headings=[str(h) for h in headings if str(h).strip()], source=str(source or ""))


def check_unique_ids(chunks: Sequence[Chunk]) -> None:
    """ValueError naming the first chunk id that appears twice."""
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.id in seen:
            raise ValueError(f"chunk id {chunk.id!r} appears twice; give every document/node a unique id")
        seen.add(chunk.id)


def build_pairs(chunks: Sequence[Chunk], builder: Any = None) -> list[Any]:
    """Training pairs of ``chunks`` with ``builder`` (anything with ``.build(chunks) -> list[Pair]``,
    e.g. ``embtune.pairs.heuristic.HeuristicPairs`` or ``embtune.pairs.labels.LabelPairs``); None
    means ``HeuristicPairs(show_progress=False)`` (no labels, no LLM). Returns the builder's Pairs."""
    check_unique_ids(chunks)
    if builder is None:
        from embtune.pairs.heuristic import HeuristicPairs

        builder = HeuristicPairs(show_progress=False)
    return list(builder.build(list(chunks)))


def judged_queries(corpus_ids: Iterable[str] | None, queries: Mapping[str, str],
                   qrels: Mapping[str, Mapping[str, int]]) -> tuple[list[str], int]:
    """``(query ids with a relevant document (score > 0), number of qrels queries without one)``.

    EmbtuneError when qrels are empty, or name a query missing from ``queries`` or (when
    ``corpus_ids`` is given) a document missing from the corpus.
    """
    from embtune.eval.metrics import has_relevant

    if not qrels:
        raise EmbtuneError("qrels are empty")
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise EmbtuneError(f"{len(missing_q)} qrels query ids are not in queries, e.g. {missing_q[0]!r}")
    if corpus_ids is not None:
        corpus_ids = set(corpus_ids)
        missing_d = [d for docs in qrels.values() for d in docs if d not in corpus_ids]
        if missing_d:
            raise EmbtuneError(f"{len(missing_d)} qrels doc ids are not in the corpus, e.g. {missing_d[0]!r}")
    qids = [q for q, docs in qrels.items() if has_relevant(docs)]
    return qids, len(qrels) - len(qids)


def dedupe(ids: Iterable[Hashable]) -> list[Hashable]:
    """``ids`` in order with repeats removed (the first, best-ranked occurrence kept)."""
    return list(dict.fromkeys(ids))


def score_rankings(ranked: Mapping[str, Sequence[Hashable]], qrels: Mapping[str, Mapping[str, int]],
                   ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """``retrieval_metrics`` of retriever answers: ``ranked`` query id → returned ids best first
    (repeats removed here). Warns when no answer reaches the largest k (the retriever returns fewer
    hits than the metrics look at, so @k values are those of a shorter list)."""
    from embtune.eval.metrics import check_ks, retrieval_metrics

    ks = check_ks(ks)
    clean = {qid: dedupe(ids) for qid, ids in ranked.items()}
    longest = max((len(ids) for ids in clean.values()), default=0)
    if longest < ks[-1]:
        logger.warning("the retriever returned at most %d results per query but metrics go to @%d; raise "
                       "its k (search_kwargs / similarity_top_k) for meaningful values", longest, ks[-1])
    return retrieval_metrics(clean, qrels, ks)
