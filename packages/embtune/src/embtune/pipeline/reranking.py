"""The reranker stages of a from-corpus run (``--reranker BASE``): a cross-encoder trained from the
run's own pairs, and the two-stage rows of the report.

    reranker_train   pairs.jsonl (+ BASE)              -> reranker/ (merged ST CrossEncoder); checkpoints
                                                          in reranker-run/checkpoints, resumed on a rerun
    two_stage        merged/ + its chunk embeddings + reranker/ + chunks + eval.jsonl
                                                       -> work/two_stage.json

The reranker starts from BASE (``default``: the embedded all-MiniLM-L6-v2 with a fresh head; a saved
reranker keeps its head; a decoder is scored Qwen3-Reranker style; `embtune.rerankers`) and trains
with the listwise loss (positive vs the pair's mined hard negatives and other rows' documents) in
``embtune.train``'s loop: LoRA of the run's rank, or every weight with ``--full``.

The two-stage rows rank the same eval queries over the same chunks, scored by the same code as the
report's before/after rows (`embtune.pipeline.evaluation.evaluate_rankings`): the tuned dense model;
BM25 + dense fused by reciprocal rank (`embtune.eval.hybrid`); the tuned dense model's first
``--rerank-top`` chunks reordered by BASE when it is a trained reranker (the "before" of the
reranker; a fresh head would only add noise) and by the tuned reranker. ``ms_per_query`` is the
time each row takes per query: query encoding + search for dense, plus BM25 scoring + fusion for
hybrid (indexing the chunks is not counted), and for a rerank row what the cross-encoder's scoring adds
(as in `embtune.eval.two_stage`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embtune.pipeline.evaluation import evaluate_rankings, headline, rank_chunks, search_depth
from embtune.pipeline.records import read_chunks, read_eval
from embtune.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from embtune.pipeline.from_corpus import Pipeline
    from embtune.pipeline.settings import RunSettings

RERANKER = "reranker"
RERANKER_RUN = "reranker-run"
TWO_STAGE = "work/two_stage.json"


def reranker_max_length(settings: "RunSettings") -> int:
    """Tokens per (query, chunk) input: the chunk size plus room for the query (at most 512)."""
    return min(512, settings.chunk_tokens + 64)


def reranker_base(settings: "RunSettings") -> str | None:
    """The reranker's starting model: None for ``default`` (the embedded MiniLM, fresh head), else BASE."""
    return None if settings.reranker in (None, "", "default") else settings.reranker


def reranker_train_stage(pairs_path: Path, run_dir: Path, settings: "RunSettings") -> dict[str, Any]:
    """Train the reranker on the run's pairs and save it merged to ``run_dir/reranker``.

    Out: ``{"steps", "final_loss", "loss_history", "resumed_from", "path"}``.
    """
    from embtune.pipeline.training import corpus_pairs_data
    from embtune.rerankers.training import train_reranker

    _, result, _ = train_reranker(
        corpus_pairs_data(pairs_path), run_dir / RERANKER_RUN, save_to=run_dir / RERANKER,
        base=reranker_base(settings), loss="listwise", qlora=settings.qlora, full=settings.full,
        lora_r=settings.lora_r, lora_alpha=settings.lora_alpha,
        learning_rate=None if settings.full else settings.learning_rate, max_length=reranker_max_length(settings),
        dtype=settings.dtype, trust_remote_code=settings.trust_remote_code, allow_pickle=settings.allow_pickle,
        epochs=settings.epochs, max_steps=settings.max_steps, batch_size=settings.batch_size, seed=settings.seed,
        save_steps=settings.save_steps, logging_steps=settings.logging_steps, show_progress=settings.show_progress,
        gradient_checkpointing=settings.gradient_checkpointing)
    return {"steps": result.global_step,
            "final_loss": None if result.final_loss is None else round(result.final_loss, 6),
            "loss_history": [[int(s), float(v)] for s, v in result.loss_history],
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
            "path": str(run_dir / RERANKER)}


def two_stage_stage(pipe: "Pipeline", merged_emb: Path, level: str) -> dict[str, Any]:
    """Rank the eval queries dense, hybrid and reranked; write every row's metrics to work/two_stage.json.

    Out: ``{"rows": [{"method", report metrics..., "ms_per_query"}], "top": N, "queries": n}``.
    """
    import numpy as np

    from embtune.eval import bm25
    from embtune.eval.hybrid import hybrid_rankings
    from embtune.rerankers import load_reranker
    from embtune.rerankers.loading import saved_as_cross_encoder
    from embtune.rerankers.scoring import rerank_rankings

    settings = pipe.settings
    chunks = read_chunks(pipe.path("chunks.jsonl"), fields=("id", "doc_id", "text"))
    queries = read_eval(pipe.path("eval.jsonl"), {c["id"] for c in chunks})
    qids = [q["query_id"] for q in queries]
    ids, texts = [c["id"] for c in chunks], {c["id"]: c["text"] for c in chunks}
    depth = max(search_depth(chunks, level), settings.rerank_top)
    embeddings = np.load(merged_emb, allow_pickle=False)
    model = pipe.merged_model()
    started = time.perf_counter()
    dense = rank_chunks(model, [q["query"] for q in queries], ids, embeddings, depth,
                        show_progress=settings.show_progress)
    per_query = 1000.0 / max(1, len(queries))
    rows = [_row("dense (tuned)", chunks, queries, dense, level, (time.perf_counter() - started) * per_query)]
    if bm25.available():
        timings: dict[str, float] = {}
        lexical = bm25.bm25_rankings([texts[i] for i in ids], ids, [q["query"] for q in queries], depth,
                                     timings=timings)
        started = time.perf_counter()
        fused = hybrid_rankings(dict(zip(qids, dense)), dict(zip(qids, lexical)), k=depth)
        added = timings.get("search_s", 0.0) + time.perf_counter() - started  # indexing is not per query
        rows.append(_row("hybrid (BM25 + dense)", chunks, queries, [fused[q] for q in qids], level,
                         rows[0]["ms_per_query"] + added * per_query))
    rerankers = {"tuned reranker": pipe.path(RERANKER)}
    base = reranker_base(settings)
    if base is not None and Path(base).is_dir() and saved_as_cross_encoder(base):
        rerankers = {f"base reranker ({Path(base).name})": base, **rerankers}
    query_text = dict(zip(qids, (q["query"] for q in queries)))
    for name, source in rerankers.items():
        reranker = load_reranker(source, max_length=reranker_max_length(settings), for_inference=True,
                                 dtype=settings.dtype)
        reranked, seconds = rerank_rankings(reranker, query_text, texts, dict(zip(qids, dense)),
                                            top=settings.rerank_top, show_progress=settings.show_progress)
        rows.append(_row(f"dense + {name}", chunks, queries, [reranked[q] for q in qids], level, seconds * per_query))
        del reranker
    result = {"rows": rows, "top": settings.rerank_top, "queries": len(queries), "level": level}
    atomic_write_json(pipe.path(TWO_STAGE), result)
    return result


def _row(method: str, chunks, queries, rankings, level: str, ms_per_query: float) -> dict[str, Any]:
    metrics = headline(evaluate_rankings(chunks, queries, rankings, level))
    return {"method": method, **{k: round(v, 6) for k, v in metrics.items()}, "ms_per_query": round(ms_per_query, 2)}


def reranker_stages(pipe: "Pipeline", merged_emb: Path, level: str) -> dict[str, Any]:
    """Run reranker_train then two_stage in ``pipe`` (only with ``--reranker``); returns their infos."""
    settings = pipe.settings
    pairs, merged = pipe.path("pairs.jsonl"), pipe.path("merged")
    base = reranker_base(settings) or "default"
    train_keys = {"base": base, "qlora": settings.qlora, "full": settings.full, "lora_r": settings.lora_r,
                  "lora_alpha": settings.lora_alpha, "epochs": settings.epochs, "max_steps": settings.max_steps,
                  "batch_size": settings.batch_size, "learning_rate": settings.learning_rate, "seed": settings.seed,
                  "dtype": settings.dtype, "max_length": reranker_max_length(settings)}
    info = {"reranker_train": pipe.stage("reranker_train", {"pairs": pairs}, train_keys, [RERANKER],
                                         lambda: reranker_train_stage(pairs, pipe.dir, settings))}
    inputs = {"merged": merged, "embeddings": merged_emb, "reranker": pipe.path(RERANKER),
              "chunks": pipe.path("chunks.jsonl"), "eval": pipe.path("eval.jsonl"), "base": base}
    info["two_stage"] = pipe.stage("two_stage", inputs, {"top": settings.rerank_top, "level": level},
                                   [TWO_STAGE], lambda: two_stage_stage(pipe, merged_emb, level))
    return info


def report_lines(two_stage: dict[str, Any] | None) -> list[str]:
    """report.md's two-stage section (empty without ``--reranker``)."""
    if not two_stage or not two_stage.get("rows"):
        return []
    from embtune.pipeline.evaluation import REPORT_METRICS
    from embtune.tables import markdown_table

    keys = [k for k in REPORT_METRICS if k in two_stage["rows"][0]]
    body = [[row["method"], *(f"{row[k]:.4f}" for k in keys), f"{row['ms_per_query']:.1f}"]
            for row in two_stage["rows"]]
    return ["## Two-stage retrieval", "",
            f"The same {two_stage.get('queries', '?')} queries: the tuned model alone, fused with BM25, and its "
            f"first {two_stage.get('top')} chunks reordered by a reranker; ms/query is what each row adds.", "",
            markdown_table(["method", *keys, "ms/query"], body), ""]
