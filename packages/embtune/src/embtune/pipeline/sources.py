"""Where a run's training pairs and evaluation queries come from, and how the report names it.

* ``build_pairs``: the configured builder; for ``heuristic``, when its default signal (titles and
  headings) gives fewer pairs than ``FALLBACK_SHARE`` (5 %) of the chunks (title-less text: scraped or
  OCR'd exports, long documents under one title), the ``keywords`` signal is added, with one warning
  line.
* ``split_held_out``: held-out documents' queries become the evaluation set. Keyword and cloze
  queries copy the text (``embtune.pairs.split.VERBATIM_BUILDERS``) and are never used for that,
  unless no other pair exists: then they are, with one warning line, and the report says so.
* ``evaluation_source``: the line the report opens with: the user's labelled queries, or synthetic
  queries from builder X, which are no measure of the user's own searches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from embtune.corpus.types import Chunk
    from embtune.pairs.types import EvalQuery, Pair
    from embtune.pipeline.settings import RunSettings

FALLBACK_SIGNAL = "keywords"
FALLBACK_SHARE = 0.05
"""The heuristic builder adds keyword pairs only when titles give fewer pairs than this share of the
chunks (title-less text). A last resort: keyword pairs lost on every corpus measured (SciFact -0.005,
NFCorpus -0.002, ArguAna -0.047 nDCG@10 on real queries), while ArguAna's titles, one per 4 chunks,
gained +0.019 alone."""
NOT_A_MEASURE = "not a measure of your users' searches"


def build_pairs(builder: str, chunks: Sequence["Chunk"], settings: "RunSettings", model: Any, emb: Any,
                warn: Callable[[str], None], empty_doc_ids: Sequence[str] = ()) -> tuple[list["Pair"], str | None]:
    """The pairs of ``builder`` over ``chunks``, with the keywords fallback of the module docstring.

    In: the builder name, the chunks, the run settings, the base model and its chunk embeddings,
    ``warn`` (one line per fallback), ``empty_doc_ids`` (documents without text that labels may name).
    Out: ``(pairs, "keywords" when the fallback added pairs, else None)``.
    """
    pairs = run_builder(builder, chunks, settings, model, emb, empty_doc_ids=empty_doc_ids)
    if builder != "heuristic" or len(pairs) >= FALLBACK_SHARE * len(chunks):
        return pairs, None
    extra = run_builder(builder, chunks, settings, model, emb, signals=(FALLBACK_SIGNAL,))
    if not extra:
        return pairs, None
    warn(f"titles and headings gave {len(pairs)} heuristic pair(s) from {len(chunks)} chunks (text without "
         f"titles?); added {len(extra)} keyword-query pairs (the heuristic '{FALLBACK_SIGNAL}' "
         "signal)")
    return pairs + extra, FALLBACK_SIGNAL


def run_builder(builder: str, chunks: Sequence["Chunk"], settings: "RunSettings", model: Any, emb: Any, *,
                signals: Sequence[str] | None = None, empty_doc_ids: Sequence[str] = ()) -> list["Pair"]:
    """The pairs one builder (labels, heuristic or llm; ``embtune.pairs``) makes from ``chunks``.

    ``signals``: the heuristic signals (None: ``HeuristicPairs``' defaults); ``empty_doc_ids``: documents
    without text that labels may name (their judgements give no pair; ``LabelPairs``)."""
    progress = settings.show_progress
    if builder == "labels":
        from embtune.pairs.labels import LabelPairs

        return LabelPairs(settings.queries, settings.labels, show_progress=progress,
                          empty_doc_ids=empty_doc_ids).build(chunks, model, emb)
    if builder == "heuristic":
        from embtune.pairs.heuristic import DEFAULT_SIGNALS, HeuristicPairs

        return HeuristicPairs(signals or DEFAULT_SIGNALS, seed=settings.seed, show_progress=progress).build(chunks)
    if builder == "llm":
        from embtune.pairs.llm import LLMPairs

        local = {"gguf": settings.llm_gguf} if settings.llm_gguf is not None else {}
        return LLMPairs(settings.llm_url, settings.llm_model, show_progress=progress, **local).build(chunks)
    raise ValueError(f"unknown pair builder {builder!r}")


def no_pairs_message(builder: str, chunks: int) -> str:
    """The error when ``builder`` gives no pair at all from ``chunks`` chunks: what to try next."""
    if builder == "heuristic":
        return (f"the heuristic pair builder produced no pairs from {chunks} chunks, not even keyword queries "
                "(they need words shared by at least two chunks): add documents, or bring your own "
                "labels (--labels QRELS.tsv --queries QUERIES.jsonl) or an LLM (--pairs llm --llm-url URL)")
    return (f"the {builder} pair builder produced no pairs from {chunks} chunks; the corpus may be too small or "
            "have too little text")


def split_held_out(pairs: list["Pair"], eval_fraction: float, seed: int, warn: Callable[[str], None]
                   ) -> tuple[list["Pair"], list["EvalQuery"], list[str], list[str]]:
    """Hold out documents for evaluation (``embtune.pairs.split.split_by_document``), falling back to verbatim
    (keyword/cloze) queries when no other pair exists (one ``warn`` line).

    Out: ``(training pairs, evaluation queries (``EvalQuery``), held-out document ids, builders of the eval queries)``.
    Raises ConfigError from the split when no document can be held out.
    """
    from embtune.pairs.split import VERBATIM_BUILDERS, split_by_document

    builders = sorted({p.builder for p in pairs})
    allowed = [b for b in builders if b not in VERBATIM_BUILDERS]
    fallback = not allowed and len({p.doc_id for p in pairs}) >= 2
    if fallback:
        allowed = builders
        warn(f"every pair copies its query from the text ({', '.join(builders)}); evaluating on such queries of "
             "held-out documents, which is easier than real searches: for a real measure pass --eval-labels "
             "QRELS.tsv --queries QUERIES.jsonl")
    train, evals = split_by_document(pairs, eval_fraction, seed, eval_builders=allowed if fallback else None)
    held = {p.doc_id for p in pairs} - {p.doc_id for p in train}
    used = sorted({p.builder for p in pairs if p.doc_id in held and p.builder in allowed})
    return train, evals, sorted(held), used


def evaluation_source(settings: "RunSettings", pairs_info: dict[str, Any],
                      split_info: dict[str, Any]) -> dict[str, str]:
    """Name the evaluation queries for the report.

    In: the run settings and the pairs/split stage infos. Out: ``{"kind": "labelled" | "synthetic",
    "text": the report's first-line description}``: ``--eval-labels`` or a labels builder (whose
    held-out queries are the user's) is "your labelled queries"; any other builder's held-out queries
    are "synthetic queries from builder X — not a measure of your users' searches".
    """
    from embtune.pairs.split import VERBATIM_BUILDERS

    if settings.eval_labels is not None:
        return {"kind": "labelled", "text": f"your labelled queries ({settings.eval_labels.name})"}
    builder = pairs_info.get("builder") or settings.builder
    if builder == "labels":
        return {"kind": "labelled", "text": "your labelled queries (those of held-out documents)"}
    used = split_info.get("eval_builders") or [builder]
    text = f"synthetic queries from builder {', '.join(used)} — {NOT_A_MEASURE}"
    if any(b in VERBATIM_BUILDERS for b in used):
        text += " (their words are copied from the text, so they flatter every retriever)"
    return {"kind": "synthetic", "text": text}


__all__ = ["FALLBACK_SIGNAL", "FALLBACK_SHARE", "build_pairs", "no_pairs_message", "split_held_out",
           "evaluation_source"]
