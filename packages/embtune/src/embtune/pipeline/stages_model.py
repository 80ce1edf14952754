"""The model stages of a from-corpus run, each from input files to one output in DIR.

    baseline     base model + chunk embeddings + eval.jsonl -> work/before.json
    train        pairs.jsonl                  -> adapter/ (model/ with --full); checkpoints/ on the way
    validation   chunks + pairs.jsonl + held-out documents -> work/validation.jsonl  (``pipeline.selection``)
    select       adapter/ + checkpoints/ + validation -> selection.json  (checkpoint x adapter strength)
    merge        adapter/ (+ selection.json)  -> merged/  (plain sentence-transformers folder, the chosen one)
    embed_after  merged/ + chunks.jsonl       -> work/chunk_embeddings.merged.npy
    after        merged/ + its chunk embeddings + eval.jsonl -> work/after.json
    export       merged/                      -> exports/ (only with --export)
    report       everything above             -> report.json, report.md, report.png (always rewritten)

Evaluation is at chunk level for held-out queries and at document level for --eval-labels (see
``embtune.pipeline.evaluation``).

Training resumes through ``embtune.training``'s checkpoints in DIR/checkpoints: a run killed during
training continues from the newest checkpoint when the same command runs again. Checkpoints left by
a training run with other inputs or settings are removed before training starts again.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embtune.pipeline.evaluation import evaluate_chunks, headline
from embtune.pipeline.records import AFTER, BEFORE, read_chunks, read_eval
from embtune.pipeline.settings import TrainSettings
from embtune.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from embtune.pipeline.from_corpus import Pipeline
    from embtune.pipeline.settings import RunSettings

MERGED_EMBEDDINGS = "work/chunk_embeddings.merged.npy"
LOSS_POINTS = 40


def eval_stage(model: Any, chunks_path: Path, eval_path: Path, emb_path: Path, out_path: Path, level: str,
               show_progress: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` on the run's chunks and eval queries; write all metrics (and each query's
    values, ``per_query``, for the report's changed queries) to ``out_path``.

    ``emb_path``: the model's own chunk embeddings (.npy, from an embed stage); ``level``: "chunk"
    or "document" (``evaluation.evaluate_chunks``). Out: ``{"metrics": the report metrics,
    "queries": n, "chunks": m, "level": level}``.
    """
    from embtune.pipeline.stages import load_embeddings

    chunks = read_chunks(chunks_path, fields=("id", "doc_id"))  # the texts are not needed to search
    queries = read_eval(eval_path, {c["id"] for c in chunks})
    metrics = evaluate_chunks(model, chunks, queries, load_embeddings(emb_path), level, show_progress=show_progress,
                              per_query=True)  # per-query values for the report's changed queries
    atomic_write_json(out_path, metrics)
    return {"metrics": headline(metrics), "queries": len(queries), "chunks": len(chunks), "level": level}


def train_settings(settings: "RunSettings", train_pairs: int) -> "RunSettings":
    """The run's settings with the loss recorded at ~40 points of its training (``logging_steps``)."""
    steps = settings.max_steps or math.ceil(train_pairs / settings.batch_size) * settings.epochs
    return replace(settings, logging_steps=max(1, steps // LOSS_POINTS))


def train_stage(pairs_path: Path, run_dir: Path, settings: TrainSettings) -> dict[str, Any]:
    """Train on the run's pairs.jsonl; the weights go to ``run_dir/adapter`` (or ``model``).

    Out: ``{"steps", "final_loss", "loss_history", "resumed_from", "path"}``.
    """
    from embtune.pipeline.training import train_model

    _, result, weights = train_model(pairs_path, run_dir, settings)
    return {"steps": result.global_step,
            "final_loss": None if result.final_loss is None else round(result.final_loss, 6),
            "loss_history": [[int(s), float(v)] for s, v in result.loss_history],
            "resumed_from": str(result.resumed_from) if result.resumed_from else None, "path": str(weights)}


def merge_stage(weights: Path, merged: Path, qlora: bool, choice: dict[str, Any] | None = None,
                base_source: str | None = None) -> dict[str, Any]:
    """Merge the trained adapter (or copy the full model) into ``merged`` as a plain ST folder; with a
    selection ``choice`` (``pipeline.selection``: checkpoint, strength) that candidate is written."""
    from embtune.pipeline.training import merge_model

    strength, checkpoint = 1.0, None
    if choice is not None:
        strength = float(choice["strength"])
        if choice.get("checkpoint", "final") not in ("final", "base"):
            checkpoint = merged.parent / "checkpoints" / choice["checkpoint"]
    merge_model(weights, merged, qlora=qlora, strength=strength, checkpoint=checkpoint, base_source=base_source)
    return {"path": str(merged), "strength": strength,
            "checkpoint": choice.get("checkpoint", "final") if choice else "final"}


def export_stage(merged: Path, exports: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    """Export the merged model to ``exports/<format>`` for each format (via ``embtune.export``); the
    folder is built under a temporary name and renamed into place when every format is written."""
    from embtune.pipeline.exports import run_exports
    from embtune.utils.atomic import atomic_dir

    with atomic_dir(exports) as tmp:
        written = run_exports(merged, tmp, formats)
    return {"written": {fmt: str(exports / Path(path).relative_to(tmp)) for fmt, path in written.items()}}


def _clear_stale_checkpoints(pipe: "Pipeline", key: str) -> None:
    """Remove checkpoints of a training run with other inputs/settings, then note this run's key."""
    if pipe.manifest.noted("train_key") not in (None, key):
        shutil.rmtree(pipe.path("checkpoints"), ignore_errors=True)
        pipe.path("trainer_state.json").unlink(missing_ok=True)
        pipe.console.print("[yellow]![/] training inputs or settings changed: old checkpoints removed")
    pipe.manifest.note("train_key", key)


def model_stages(pipe: "Pipeline") -> dict[str, Any]:
    """Run baseline -> train -> (validation -> select, with ``select_strength``) -> merge -> embed_after ->
    after -> export in ``pipe``; returns the infos by stage name."""
    from embtune.models.names import resolve_model
    from embtune.pipeline.stages import EMBEDDINGS, embed_stage

    settings = pipe.settings
    chunks, evals, pairs = pipe.path("chunks.jsonl"), pipe.path("eval.jsonl"), pipe.path("pairs.jsonl")
    model_key = pipe.model_id()
    info: dict[str, Any] = {}
    emb, merged_emb = pipe.path(EMBEDDINGS), pipe.path(MERGED_EMBEDDINGS)
    level = "document" if settings.eval_labels is not None else "chunk"
    evaluation = {"max_seq_length": settings.max_seq_length, "level": level}
    info["baseline"] = pipe.stage(
        "baseline", {"chunks": chunks, "eval": evals, "embeddings": emb, "model": model_key}, evaluation, [BEFORE],
        lambda: eval_stage(pipe.base_model(), chunks, evals, emb, pipe.path(BEFORE), level, settings.show_progress))
    pipe.release_model()  # free the inference copy before training
    with pairs.open("rb") as fh:
        n_pairs = sum(1 for line in fh if line.strip())
    ts = train_settings(settings, n_pairs)
    weights = pipe.path(ts.weights_folder())
    train_keys = {f.name: getattr(ts, f.name) for f in fields(TrainSettings)
                  if f.name not in ("show_progress", "save_steps", "gradient_checkpointing")}  # same result
    info["train"] = pipe.stage("train", {"pairs": pairs, "model": model_key}, train_keys, [ts.weights_folder()],
                               lambda: train_stage(pairs, pipe.dir, ts),
                               before_run=lambda key: _clear_stale_checkpoints(pipe, key))
    merged = pipe.path("merged")
    merge_inputs: dict[str, Path | str] = {"weights": weights}
    choice = None
    if settings.select_strength:
        from embtune.pipeline.selection import run_selection

        info.update(run_selection(pipe, info["train"], weights))
        choice = info["select"]["choice"]
        merge_inputs.update(selection=json.dumps(choice, sort_keys=True), model=model_key)
        if choice["checkpoint"] not in ("final", "base"):
            merge_inputs["checkpoint"] = pipe.path(f"checkpoints/{choice['checkpoint']}/trainable.safetensors")
    info["merge"] = pipe.stage("merge", merge_inputs, {"qlora": settings.qlora}, ["merged"],
                               lambda: merge_stage(weights, merged, settings.qlora, choice,
                                                   resolve_model(settings.model)))
    if choice is not None and choice["strength"] == 0.0:  # merged/ is the base model: its embeddings exist
        info["embed_after"] = pipe.stage(
            "embed_after", {"chunks": chunks, "merged": merged, "embeddings": emb},
            {"max_seq_length": settings.max_seq_length, "reuse": "base"}, [MERGED_EMBEDDINGS],
            lambda: reuse_embeddings(emb, merged_emb))
    else:
        info["embed_after"] = pipe.stage(
            "embed_after", {"chunks": chunks, "merged": merged}, {"max_seq_length": settings.max_seq_length},
            [MERGED_EMBEDDINGS], lambda: embed_stage(chunks, merged_emb, pipe.merged_model(), settings.show_progress))
    info["after"] = pipe.stage(
        "after", {"merged": merged, "chunks": chunks, "eval": evals, "embeddings": merged_emb}, evaluation, [AFTER],
        lambda: eval_stage(pipe.merged_model(), chunks, evals, merged_emb, pipe.path(AFTER), level,
                           settings.show_progress))
    if settings.reranker is not None:
        from embtune.pipeline.reranking import reranker_stages

        info.update(reranker_stages(pipe, merged_emb, level))
    if settings.export:
        info["export"] = pipe.stage("export", {"merged": merged}, {"formats": list(settings.export)}, ["exports"],
                                    lambda: export_stage(merged, pipe.path("exports"), settings.export))
    return info


def reuse_embeddings(source: Path, out_path: Path) -> dict[str, Any]:
    """Copy the base model's chunk embeddings ``source`` to ``out_path`` (atomically): when the selection
    keeps the base model, merged/ is that model and encoding the corpus again would give the same matrix.
    Out: the embed stage's info (``chunks``, ``dim``) and ``"reused": "base"``."""
    import numpy as np

    from embtune.utils.atomic import atomic_file

    emb = np.load(source, mmap_mode="r", allow_pickle=False)
    with atomic_file(out_path, "wb") as fh:
        np.save(fh, np.asarray(emb), allow_pickle=False)
    return {"chunks": int(emb.shape[0]), "dim": int(emb.shape[1]), "reused": "base"}


def finish_report(pipe: "Pipeline", info: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Write report.json / .md / .png from the stages' infos and print the summary; returns the report."""
    from embtune.pipeline.run_report import build_report, write_report
    from embtune.pipeline.report_sections import add_sections
    from embtune.pipeline.stages import data_counts
    from embtune.pipeline.console import print_summary

    settings = pipe.settings
    counts = data_counts(info)
    counts["train_steps"] = info["train"].get("steps")
    timings = {name: entry.get("seconds") for name, entry in pipe.manifest.data["stages"].items()}
    timings["total_of_stages"] = round(sum(v for v in timings.values() if v), 3)
    timings["this_invocation"] = round(seconds, 3)
    files = {"chunks": "chunks.jsonl", "pairs": "pairs.jsonl", "eval": "eval.jsonl", "checkpoints": "checkpoints/",
             "weights": Path(info["train"].get("path", "adapter")).name + "/", "merged": "merged/",
             "report": "report.md"}
    if settings.export:
        files["exports"] = "exports/"
    level = info["after"].get("level", "chunk")
    evaluation = {"queries": info["after"].get("queries"), "chunks": info["after"].get("chunks"),
                  "source": info["split"].get("eval_source"),
                  "level": level + (" (each document ranked by its best chunk)" if level == "document" else "")}
    report = build_report(info["baseline"]["metrics"], info["after"]["metrics"], evaluation=evaluation,
                          counts=counts, timings=timings, settings=settings.to_dict(),
                          loss_history=info["train"].get("loss_history", []),
                          files={k: str(pipe.dir / v) for k, v in files.items()})
    if "select" in info:  # the selection of pipeline.selection: in report.json/.md, one line on the console
        from embtune.pipeline.selection import SELECTION, read_selection

        report["selection"] = read_selection(pipe.path(SELECTION))
        report["files"]["selection"] = str(pipe.dir / SELECTION)
    if "two_stage" in info:  # --reranker: dense / hybrid / dense + rerank rows (pipeline.reranking)
        report["two_stage"] = info["two_stage"]
        report["files"]["reranker"] = str(pipe.dir / "reranker")
    report = add_sections(pipe, info, report)  # evaluation source first, BM25 row, queries that changed
    write_report(pipe.dir, report)
    print_summary(pipe.console, report, pipe.dir)
    if "selection" in report and settings.show_progress:
        pipe.console.print(f"[bold]selection[/] {report['selection'].get('message', '')}", highlight=False)
    return report
