"""The data stages of a from-corpus run: each maps input files to one output in DIR.

    chunk_stage      CORPUS                         -> chunks.jsonl
    embed_stage      chunks.jsonl + base model      -> work/chunk_embeddings.npy  (encoded once, shared)
    pairs_stage      chunks.jsonl (+ labels)        -> work/pairs.built.jsonl     (built, then filtered)
    split_stage      work/pairs.built.jsonl         -> eval.jsonl + work/pairs.split.jsonl
                                                       (held out by document, or --eval-labels)
    negatives_stage  work/pairs.split.jsonl         -> pairs.jsonl                (hard negatives added)

Negatives are mined after the split so that no chunk of a held-out document becomes a training
negative (``exclude_doc_ids``). The stage functions call the library functions of
``embtune.corpus`` / ``embtune.pairs`` on their own objects (``Chunk``, ``Pair``; ``records`` reads
and writes them) and do all the file writing, atomically. ``data_stages`` wires them into a Pipeline with their manifest keys.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from embtune.errors import ConfigError, DataFormatError, EmbtuneError
from embtune.data.beir import read_queries
from embtune.pipeline import eval_labels
from embtune.pipeline.records import (CHUNK_FIELDS, EVAL_FIELDS, EVAL_OPTIONAL, ChunkTexts, as_record, read_chunks,
                                      read_pairs, to_chunks, write_jsonl, write_pairs)
from embtune.utils.atomic import atomic_file

if TYPE_CHECKING:
    from embtune.pipeline.from_corpus import Pipeline
    from embtune.pipeline.settings import RunSettings

EMBEDDINGS = "work/chunk_embeddings.npy"
BUILT = "work/pairs.built.jsonl"
SPLIT = "work/pairs.split.jsonl"
NEGATIVES_SKIP_TOP = 3
NEGATIVES_MARGIN = 0.05
KEEP_SHARE = 0.75


def load_embeddings(path: Path) -> np.ndarray:
    """The chunk embedding matrix written by ``embed_stage`` (float32, one row per chunk).

    Never unpickles: a file holding Python objects (a tampered or foreign .npy) or anything but a
    2-D float matrix raises DataFormatError naming it; deleting it makes the next run recompute it.
    """
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"not a chunk embedding matrix ({' '.join(str(exc).split())}); delete it and "
                              "run again to recompute it", path=path) from None
    if not isinstance(emb, np.ndarray) or emb.ndim != 2 or emb.dtype.kind != "f":
        raise DataFormatError("not a chunk embedding matrix (expected a 2-D float array); delete it and run "
                              "again to recompute it", path=path)
    return emb


# -- the stage functions -------------------------------------------------------------------------


def chunk_stage(corpus: Path, out_path: Path, load_model: Callable[[], Any], chunk_tokens: int, overlap: int,
                warn: Callable[[str], None], show_progress: bool = True) -> dict[str, Any]:
    """Read every document under ``corpus`` and write its chunks to ``out_path`` (chunks.jsonl).

    ``load_model()`` gives the model whose tokenizer measures chunks (called only once the documents
    are read, so a bad corpus fails before any model loads); a chunk holds at most ``chunk_tokens``
    tokens (fewer if the model's window is smaller) and repeats ``overlap`` tokens of the previous one.
    Out: ``{"documents", "chunks", "skipped_files", "max_tokens", "empty_documents": ids of documents
    without text}``. Raises DataFormatError naming the corpus when no document or no chunk comes out of it.
    """
    skipped: list[str] = []
    empty: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        warn(message)

    from embtune.corpus.chunking import chunk_documents, max_tokens_for
    from embtune.corpus.ingest import read_documents

    docs = read_documents(corpus, note, show_progress=show_progress, empty=empty)
    model = load_model()
    max_tokens = min(chunk_tokens, max_tokens_for(model))
    overlap = min(overlap, max_tokens // 2)
    chunks = [as_record(c, CHUNK_FIELDS)
              for c in chunk_documents(docs, model.tokenizer, max_tokens, overlap, show_progress=show_progress)]
    if not chunks:
        raise DataFormatError("the documents contain no text to chunk", path=corpus)
    if len({c["id"] for c in chunks}) != len(chunks):
        raise EmbtuneError("chunk ids are not unique; document ids must be unique", path=corpus)
    write_jsonl(out_path, chunks)
    return {"documents": len(docs), "chunks": len(chunks), "skipped_files": len(skipped), "max_tokens": max_tokens,
            "empty_documents": sorted(set(empty))}


def embed_stage(chunks_path: Path, out_path: Path, model: Any, show_progress: bool = True) -> dict[str, Any]:
    """Encode every chunk once with the base model (document role, L2-normalised float32) and save the
    matrix to ``out_path`` (.npy); filtering, mining and the baseline evaluation reuse it.

    Streams: the chunk texts are read from chunks.jsonl batch by batch (``records.ChunkTexts``) and
    their rows written into one preallocated matrix, which ``np.save`` writes straight to the file, so
    memory is that matrix plus one batch and 24 bytes of index per chunk.
    """
    from embtune.pairs.embeddings import encode_chunk_texts

    with ChunkTexts(chunks_path) as texts:
        emb = encode_chunk_texts(model, texts, texts.lengths, show_progress)
    with atomic_file(out_path, "wb") as fh:
        np.save(fh, emb, allow_pickle=False)
    return {"chunks": int(emb.shape[0]), "dim": int(emb.shape[1])}


def pairs_stage(chunks_path: Path, emb_path: Path, out_path: Path, settings: "RunSettings", model: Any,
                warn: Callable[[str], None] = lambda message: None, empty_doc_ids: list[str] = ()) -> dict[str, Any]:
    """Build (query, positive) pairs from the chunks with the settings' builder, drop those the base
    model does not confirm (the positive must rank in its query's top ``settings.filter_top_k``, or reach
    ``settings.min_cosine``) and queries that nearly repeat another of the same chunk (cosine >
    ``settings.dedup_cosine``), and write ``out_path``.
    The user's own labels are kept as given, except exact repeats (SciFact, for one, labels claims and
    their negations, whose embeddings are near-identical, against the same abstract).

    Too few heuristic pairs fall back to keyword queries (``sources.build_pairs``, one ``warn`` line);
    labels naming ``empty_doc_ids`` (documents without text) give no pair.

    Out: ``{"builder", "built", "kept", "filter", "fallback"}``. Raises EmbtuneError when no pair comes out.
    """
    from embtune.pairs.filtering import filter_pairs
    from embtune.pipeline import sources

    chunks = to_chunks(read_chunks(chunks_path))
    emb = load_embeddings(emb_path)
    builder = settings.builder
    pairs, fallback = sources.build_pairs(builder, chunks, settings, model, emb, warn, empty_doc_ids)
    if not pairs:
        raise EmbtuneError(sources.no_pairs_message(builder, len(chunks)), path=settings.corpus)
    labelled = builder == "labels"
    kept, stats = filter_pairs(pairs, model, chunks, None if labelled else (settings.filter_top_k or None),
                               None if labelled else settings.min_cosine,
                               dedup_cosine=None if labelled else settings.dedup_cosine, embeddings=emb,
                               show_progress=settings.show_progress)
    if not kept:
        raise EmbtuneError(f"no pair survived the consistency filter (of {len(pairs)} built); the corpus may be "
                           "too small or too repetitive", path=settings.corpus)
    write_pairs(out_path, kept)
    return {"builder": builder, "built": len(pairs), "kept": len(kept), "filter": stats.to_dict(),
            "fallback": fallback}


def split_stage(pairs_path: Path, chunks_path: Path, train_path: Path, eval_path: Path, settings: "RunSettings",
                warn: Callable[[str], None] = lambda message: None, empty_doc_ids: list[str] = ()) -> dict[str, Any]:
    """Write the evaluation queries (``eval_path``) and the pairs left for training (``train_path``).

    Without --eval-labels, whole source documents are held out (``eval_fraction`` of them, seeded)
    and their pairs become eval queries; with it, the user's labelled queries, each relevant document
    mapped to all its chunks, are the evaluation set, and every pair trains except, with
    ``select_strength``, those of ``eval_fraction`` of documents held out to validate the selection. Out: counts and the
    held-out document ids. Raises EmbtuneError when either side is empty. Held-out queries fall back to
    verbatim (keyword) ones when nothing else exists (``sources.split_held_out``, one ``warn`` line;
    ``eval_builders`` in the info); a labelled document in ``empty_doc_ids`` (no text) stays judged as
    an unretrievable miss.
    """
    from embtune.pairs.split import split_by_document
    from embtune.pipeline import sources

    pairs = read_pairs(pairs_path)
    eval_builders: list[str] = []
    if settings.eval_labels is None:
        try:
            train_pairs, eval_records, held_out, eval_builders = sources.split_held_out(pairs, settings.eval_fraction,
                                                                                        settings.seed, warn)
        except ConfigError as exc:
            raise EmbtuneError(f"{exc}. Add documents, or evaluate on your own labelled queries with "
                               "--eval-labels QRELS.tsv --queries QUERIES.jsonl", path=settings.corpus) from None
        source = f"held-out {settings.eval_fraction:.0%} of documents"
        dropped = 0
    else:
        from embtune.pairs.labels import read_label_qrels

        chunks = read_chunks(chunks_path)
        doc_chunks = eval_labels.chunks_by_doc(chunks)
        queries_path = settings.eval_queries_path()
        queries = read_queries(queries_path)
        judgements = read_label_qrels(settings.eval_labels, queries, set(doc_chunks), set(empty_doc_ids))
        eval_records, dropped = eval_labels.eval_queries_from_labels(judgements, queries, doc_chunks, empty_doc_ids)
        train_pairs, held_out = pairs, []
        if settings.select_strength:  # validation documents for pipeline.selection (never the labelled test queries)
            with contextlib.suppress(ConfigError):  # too few documents: the selection says it cannot validate
                train_pairs, _ = split_by_document(pairs, settings.eval_fraction, settings.seed)
                held_out = sorted({p.doc_id for p in pairs} - {p.doc_id for p in train_pairs})
        source = f"labelled queries of {settings.eval_labels.name}"
    if not eval_records:
        raise EmbtuneError("no evaluation query: too few documents to hold some out (add documents, raise "
                           "--eval-fraction, or pass --eval-labels)", path=settings.corpus)
    if not train_pairs:
        raise EmbtuneError("no training pair left after holding out the evaluation documents (add documents or "
                           "lower --eval-fraction)", path=settings.corpus)
    write_pairs(train_path, train_pairs)
    write_jsonl(eval_path, (as_record(q, EVAL_FIELDS, EVAL_OPTIONAL) for q in eval_records))
    return {"train_pairs": len(train_pairs), "eval_queries": len(eval_records), "eval_source": source,
            "held_out_documents": held_out, "eval_queries_without_chunks": dropped, "eval_builders": eval_builders}


def negatives_count(counts: list[int], wanted: int, keep_share: float = KEEP_SHARE) -> int:
    """How many negatives every training row gets: the largest ``k <= wanted`` that at least
    ``keep_share`` of the pairs reach (rows need equal columns; pairs with fewer are dropped)."""
    for k in range(wanted, 0, -1):
        if sum(c >= k for c in counts) >= keep_share * len(counts):
            return k
    return 0


def negatives_stage(pairs_path: Path, chunks_path: Path, emb_path: Path, out_path: Path, n: int,
                    exclude_doc_ids: list[str], model: Any, show_progress: bool = True,
                    warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Add up to ``n`` mined hard negatives to every training pair and write ``out_path`` (pairs.jsonl).

    Chunks of ``exclude_doc_ids`` (held-out documents) are never negatives. Every row must have the
    same number of negatives: ``k = negatives_count(...)`` (``n`` unless the false-negative guards
    left fewer for more than a quarter of the pairs, then ``warn`` says so); pairs with fewer than
    ``k`` are dropped and the others keep their ``k`` hardest. ``n == 0`` copies the pairs. Out:
    ``{"pairs", "negatives_per_pair", "dropped"}``.
    """
    from dataclasses import replace

    from embtune.pairs.negatives import mine_hard_negatives

    pairs = read_pairs(pairs_path)
    k, dropped = 0, 0
    if n > 0:
        chunks = to_chunks(read_chunks(chunks_path))
        mined = mine_hard_negatives(pairs, model, chunks, n, NEGATIVES_SKIP_TOP, NEGATIVES_MARGIN,
                                    load_embeddings(emb_path), exclude_doc_ids=set(exclude_doc_ids),
                                    show_progress=show_progress)
        k = negatives_count([len(p.negatives) for p in mined], n)
        if k < n and warn is not None:
            warn(f"only {k} hard negative(s) per pair survive the false-negative guards for most pairs "
                 f"(asked for {n}); training with {k}")
        pairs = [replace(p, negatives=p.negatives[:k], negative_ids=p.negative_ids[:k])
                 for p in mined if len(p.negatives) >= k]
        dropped = len(mined) - len(pairs)
    write_pairs(out_path, pairs)
    return {"pairs": len(pairs), "negatives_per_pair": k, "asked": n, "dropped": dropped}


# -- wiring ------------------------------------------------------------------------------------


def check_label_files(settings: "RunSettings", chunks_path: Path, empty_doc_ids: list[str] = (),
                      warn: Callable[[str], None] = lambda message: None) -> None:
    """Read --labels/--queries and --eval-labels against the chunked documents before any pair is built,
    so a bad id fails in seconds (DataFormatError naming the file and line). Judgements naming
    ``empty_doc_ids`` (documents without text, which BEIR keeps judging) are no error: one ``warn`` line
    counts them (left out of training, kept in evaluation as misses)."""
    if settings.labels is None and settings.eval_labels is None:
        return
    from embtune.pairs.labels import read_label_qrels

    doc_ids = {c["doc_id"] for c in read_chunks(chunks_path, fields=("doc_id",))}
    empty, named = set(empty_doc_ids), []
    for qrels, queries in ((settings.labels, settings.queries), (settings.eval_labels, settings.eval_queries_path())):
        if qrels is not None:
            named += [d for _, d, _ in read_label_qrels(qrels, read_queries(queries), doc_ids, empty)
                      if d in empty]
    if named:
        warn(f"{len(named)} judgement(s) name {len(set(named))} document(s) with no text (e.g. {named[0]!r}): left "
             "out of training, kept in evaluation as misses (nothing to retrieve)")


def data_stages(pipe: "Pipeline") -> dict[str, Any]:
    """Run chunks -> embed -> pairs -> split -> negatives in ``pipe``; returns the stages' infos by name."""
    settings, console = pipe.settings, pipe.console
    chunks, emb, built, split = (pipe.path(p) for p in ("chunks.jsonl", EMBEDDINGS, BUILT, SPLIT))
    train, evals = pipe.path("pairs.jsonl"), pipe.path("eval.jsonl")
    model_key = pipe.model_id()
    seq = {"max_seq_length": settings.max_seq_length}

    def warn(message: str) -> None:
        if settings.show_progress:
            console.print(f"[yellow]![/] {message}", highlight=False)

    info = {"chunks": pipe.stage(
        "chunks", {"corpus": settings.corpus, "model": model_key}, {"chunk_tokens": settings.chunk_tokens,
                                                               "overlap": settings.chunk_overlap, **seq},
        ["chunks.jsonl"], lambda: chunk_stage(settings.corpus, chunks, pipe.base_model, settings.chunk_tokens,
                                              settings.chunk_overlap, warn, settings.show_progress))}
    if settings.eval_labels is None and info["chunks"].get("documents", 0) < 2:
        raise EmbtuneError(f"found {info['chunks'].get('documents')} document; holding documents out for evaluation "
                           "needs at least 2. Add documents, or evaluate on your own labelled queries with "
                           "--eval-labels QRELS.tsv --queries QUERIES.jsonl", path=settings.corpus)
    empty_docs = info["chunks"].get("empty_documents", [])
    check_label_files(settings, chunks, empty_docs, warn)
    info["embed"] = pipe.stage("embed", {"chunks": chunks, "model": model_key}, seq, [EMBEDDINGS],
                               lambda: embed_stage(chunks, emb, pipe.base_model(), settings.show_progress))
    label_inputs = {"labels": settings.labels, "queries": settings.queries} if settings.builder == "labels" else {}
    if settings.llm_gguf is not None:  # --llm-gguf: the model file's fingerprint, so another model rebuilds the pairs
        from embtune.pairs.llm_local import gguf_fingerprint

        label_inputs["llm_gguf"] = gguf_fingerprint(settings.llm_gguf)
    info["pairs"] = pipe.stage(
        "pairs", {"chunks": chunks, "embeddings": emb, "model": model_key, **label_inputs},
        {"builder": settings.builder, "seed": settings.seed, "llm_url": settings.llm_url,
         "llm_model": settings.llm_model,
         "top_k": settings.filter_top_k, "dedup_cosine": settings.dedup_cosine, "labels_kept_as_given": True, **seq,
         **({"min_cosine": settings.min_cosine} if settings.min_cosine is not None else {})},
        [BUILT], lambda: pairs_stage(chunks, emb, built, settings, pipe.base_model(), warn, empty_docs))
    split_inputs: dict[str, Path] = {"pairs": built, "chunks": chunks}
    if settings.eval_labels is not None:
        split_inputs.update(eval_labels=settings.eval_labels, eval_queries=settings.eval_queries_path())
    holds_out = settings.eval_labels is not None and settings.select_strength
    held_for_selection = {"selection_holdout": True} if holds_out else {}
    info["split"] = pipe.stage("split", split_inputs, {"eval_fraction": settings.eval_fraction, "seed": settings.seed,
                                                       **held_for_selection},
                               ["eval.jsonl", SPLIT], lambda: split_stage(built, chunks, split, evals, settings, warn,
                                                                          empty_docs))
    held_out = info["split"].get("held_out_documents", [])
    info["negatives"] = pipe.stage(
        "negatives", {"pairs": split, "chunks": chunks, "embeddings": emb, "model": model_key},
        {"n": settings.negatives, "skip_top": NEGATIVES_SKIP_TOP, "margin": NEGATIVES_MARGIN, "exclude": held_out, **seq},
        ["pairs.jsonl"], lambda: negatives_stage(split, chunks, emb, train, settings.negatives, held_out,
                                                 pipe.base_model(), settings.show_progress, warn))
    return info


def pairs_summary(pipe: "Pipeline", info: dict[str, Any]) -> dict[str, Any]:
    """What ``embtune pairs`` returns and prints: counts and the files written."""
    counts = data_counts(info)
    files = {"chunks": str(pipe.path("chunks.jsonl")), "pairs": str(pipe.path("pairs.jsonl")),
             "eval": str(pipe.path("eval.jsonl"))}
    pipe.console.print("  ".join(f"{k}: {v}" for k, v in counts.items()), highlight=False)
    pipe.console.print("  ".join(f"{k}: {v}" for k, v in files.items()), style="dim")
    return {"counts": counts, "files": files}


def data_counts(info: dict[str, Any]) -> dict[str, Any]:
    """The counts of the data stages for the report (documents, chunks, pairs, queries)."""
    c, p, n, sp = (info.get(k, {}) for k in ("chunks", "pairs", "negatives", "split"))
    return {"documents": c.get("documents"), "chunks": c.get("chunks"), "skipped_files": c.get("skipped_files"),
            "pair_builder": p.get("builder"), "pairs_built": p.get("built"), "pairs_kept": p.get("kept"),
            "eval_queries": sp.get("eval_queries"), "held_out_documents": len(sp.get("held_out_documents", [])),
            "train_pairs": n.get("pairs"), "negatives_per_pair": n.get("negatives_per_pair")}


def describe(name: str, info: dict[str, Any]) -> str:
    """One-line summary of a finished stage's info for the console."""
    if name == "validation":
        return (f"{info.get('queries')} validation queries ({', '.join(info.get('signals', []))}) of "
                f"{info.get('documents')} held-out documents")
    if name == "select":
        return str(info.get("message", ""))
    if name == "chunks":
        return f"{info.get('documents')} documents -> {info.get('chunks')} chunks"
    if name in ("embed", "embed_after"):
        return f"{info.get('chunks')} chunk embeddings (dim {info.get('dim')})"
    if name == "pairs":
        fallback = f" (with {info['fallback']} queries)" if info.get("fallback") else ""
        return f"{info.get('builder')}{fallback}: {info.get('built')} built, {info.get('kept')} kept after filtering"
    if name == "split":
        return f"{info.get('eval_queries')} evaluation queries ({info.get('eval_source')})"
    if name == "negatives":
        dropped = info.get("dropped") or 0
        return (f"{info.get('pairs')} training pairs with {info.get('negatives_per_pair')} hard negative(s)"
                + (f" ({dropped} pairs with fewer dropped)" if dropped else ""))
    if name == "bm25" and info.get("skipped"):
        return f"skipped: {info['skipped']}"
    if name in ("baseline", "after", "bm25"):
        m = info.get("metrics", {})
        return f"nDCG@10 {m.get('ndcg@10', float('nan')):.4f}, recall@10 {m.get('recall@10', float('nan')):.4f}"
    if name in ("train", "reranker_train"):
        return f"{info.get('steps')} steps, final loss {info.get('final_loss')}"
    if name == "two_stage":
        return "; ".join(f"{r['method']} nDCG@10 {r.get('ndcg@10', float('nan')):.4f}" for r in info.get("rows", []))
    return str(info.get("path", ""))


__all__ = ["chunk_stage", "embed_stage", "pairs_stage", "split_stage", "negatives_stage", "data_stages",
           "pairs_summary", "data_counts", "describe", "load_embeddings"]
