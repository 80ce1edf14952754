"""Model selection of a from-corpus run: which checkpoint, at which adapter strength, ships in merged/.

    validation  chunks.jsonl + pairs.jsonl + held-out documents -> work/validation.jsonl
    select      adapter/ (or model/) + kept checkpoints + validation -> selection.json

A run's own held-out pairs are made by the builder it trained on, so they can show a gain that real
queries do not. The validation set is therefore made of pseudo-queries of a *signal the model was not
trained on* (``embtune.pairs.heuristic``): with the default heuristic pairs (titles) that is
``cloze`` and ``keywords``; with LLM or labelled pairs every heuristic signal; when training used all
three, all three again (a held-out mix). They are built only from documents that gave no training pair (the
held-out documents of the split; with --eval-labels the split holds such documents out too), never
from --eval-labels, which stay a test set nothing is tuned on.

Candidates are every kept checkpoint (``checkpoints/step-N``; the last is the saved weights) at every
adapter strength alpha of the grid (``embtune.models.strength``: 0 is the base model, 1 the tuned
one). Each is scored by nDCG@10 (``embtune.eval`` via ``pipeline.evaluation``) searching the chunks
of the validation documents (the held-out ones, at most ``MAX_DOCUMENTS`` of them, a seeded sample),
on all validation queries and on each signal's queries apart.

The choice is conservative (``choose``): a tuned candidate ships only if it beats the base model on
*every* validation signal (each with ``MIN_SIGNAL_QUERIES`` queries or more) by at least ``MIN_GAIN``
and by at least ``MIN_Z`` standard errors of the paired per-query differences (a one-sided test at
about the 2.5 % level: the same queries scored by both models); among those, the one whose worst
signal gains most wins, a tie going to the smaller alpha, then the earlier step. Otherwise the base
model is kept. A gain on pseudo-queries that copy words from the text is easy to get while real
searches lose (measured: on SciFact, keyword validation +0.020, real test claims -0.018), so one signal
alone, or a gain within noise, is not enough to ship. The significance test was added after NFCorpus:
keywords +0.0085 nDCG@10 at 1.7 standard errors shipped a model whose real recall@100 fell 0.014,
while SciFact's shipped candidate (+0.0098 at 2.4 standard errors, +0.017 at 3.5) gained +0.015 on
its real test claims.
The merge stage then writes exactly that candidate to merged/, and the report says when the choice
was to keep the base model.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Sequence

from embtune.pipeline.records import (EVAL_FIELDS, as_record, read_chunks, read_eval, read_pairs, to_chunks,
                                      write_jsonl)
from embtune.tables import markdown_table
from embtune.utils.atomic import atomic_write_json

VALIDATION = "work/validation.jsonl"
SELECTION = "selection.json"
MAX_DOCUMENTS = 300
"""Held-out documents validated on at most (a seeded sample): each candidate encodes their chunks."""
MAX_QUERIES = 1000
"""Validation queries kept at most (a seeded sample): enough to rank candidates, cheap to score."""
METRIC = "ndcg@10"
TIE = 1e-9
MIN_GAIN = 0.005
"""nDCG@10 a tuned candidate must gain over the base on every validation signal to ship."""
MIN_Z = 2.0
"""Standard errors (of the paired per-query differences) a signal's gain must reach to ship."""
MIN_SIGNAL_QUERIES = 20
"""Validation queries a signal needs to count in the choice on its own."""


def validation_signals(trained_builders: set[str]) -> tuple[str, ...]:
    """The heuristic signals to validate on: those no training pair came from (``heuristic:<signal>``
    builders), or every signal when training used them all."""
    from embtune.pairs.heuristic import SIGNALS

    unseen = tuple(s for s in SIGNALS if f"heuristic:{s}" not in trained_builders)
    return unseen or SIGNALS


def validation_documents(held_out: Sequence[str], seed: int, limit: int = MAX_DOCUMENTS) -> list[str]:
    """The held-out documents the selection validates on: all of them, or a seeded sample of ``limit``."""
    held = sorted(held_out)
    return sorted(random.Random(seed).sample(held, limit)) if len(held) > limit else held


def validation_stage(chunks_path: Path, pairs_path: Path, held_out: Sequence[str], out_path: Path, seed: int,
                     limit: int = MAX_QUERIES, show_progress: bool = True) -> dict[str, Any]:
    """Write the validation queries (eval.jsonl records) of the documents ``held_out`` to ``out_path``.

    Pseudo-queries of ``validation_signals`` are built over all chunks (keywords count word rarity
    over the corpus) and kept for chunks of ``held_out`` documents only (``validation_documents``);
    a query text also used in training is dropped; one text asked of several chunks gets them all;
    at most ``limit`` queries (seeded sample). Out: ``{"queries", "signals", "documents"}``
    (``queries`` may be 0: the selection then keeps the tuned model and says it could not validate).
    """
    from embtune.pairs.heuristic import SIGNALS, HeuristicPairs
    from embtune.pairs.split import query_id

    pairs = read_pairs(pairs_path)
    signals = validation_signals({p.builder for p in pairs})
    trained = {p.query.strip() for p in pairs}
    held = set(held_out)
    records: dict[str, list[str]] = {}
    signal_of: dict[str, str] = {}
    chunks = to_chunks(read_chunks(chunks_path)) if held else []
    # The unseen signals first; when they give nothing (e.g. no titles or sentences to build from), a
    # held-out mix of every signal: held-out documents were never trained on either way.
    for tried in dict.fromkeys((signals, SIGNALS)):
        if records or not held:
            break
        signals = tried
        built = HeuristicPairs(signals=tried, seed=seed, show_progress=show_progress).build(chunks)
        for pair in built:
            text = pair.query.strip()
            if pair.doc_id in held and text and text not in trained:
                relevant = records.setdefault(text, [])
                signal_of.setdefault(text, pair.builder.split(":", 1)[-1])
                if pair.positive_id not in relevant:
                    relevant.append(pair.positive_id)
    texts = list(records)
    if len(texts) > limit:
        texts = sorted(random.Random(seed).sample(texts, limit), key=texts.index)
    write_jsonl(out_path, (as_record({"query_id": query_id(t), "query": t, "relevant": records[t],
                                      "signal": signal_of[t]}, EVAL_FIELDS, ("signal",)) for t in texts))
    return {"queries": len(texts), "signals": list(signals), "documents": len(held)}


def candidates(run_dir: Path, weights: Path, final_step: int | None) -> list[tuple[str, Path | None, int | None]]:
    """The checkpoints to weigh, oldest first, as ``(label, checkpoint folder or None, step)``: every
    kept ``checkpoints/step-N`` before the last step, then the saved weights (``None``: no checkpoint
    to load), labelled ``final``."""
    from embtune.training.checkpoint import list_checkpoints

    earlier = [(f"step-{step}", path, step) for step, path in list_checkpoints(run_dir)
               if final_step is None or step < final_step]
    return earlier + [("final", None, final_step)]


def select_stage(run_dir: Path, weights: Path, final_step: int | None, chunks_path: Path, validation_path: Path,
                 held_out: Sequence[str], out_path: Path, strengths: Sequence[float], base_source: str,
                 qlora: bool, load_options: dict[str, Any], validation_info: dict[str, Any],
                 show_progress: bool = True) -> dict[str, Any]:
    """Score every candidate on the validation queries and write the choice to ``out_path``.

    In: the run folder (its kept checkpoints), the trained ``weights`` folder and its last step, the
    chunks, the validation queries and the held-out documents whose chunks are searched, the strength
    grid, the base model, ``qlora`` and further load options. Out (also in selection.json, with
    every candidate's metrics): ``{"choice": {"checkpoint", "step", "strength", METRIC}, "kept_base",
    "base": METRIC of the base, "message"}``.
    """
    from embtune.models.strength import StrengthModel
    from embtune.pairs.embeddings import encode_chunk_texts
    from embtune.pipeline.evaluation import evaluate_chunks, headline

    queries = read_eval(validation_path) if validation_info.get("queries") else []  # 0: an empty file
    held = set(held_out)
    pool = [c for c in read_chunks(chunks_path, fields=("id", "doc_id", "text")) if c["doc_id"] in held]
    pool_ids = {c["id"] for c in pool}
    queries = [q for q in queries if set(q["relevant"]) <= pool_ids]
    if not queries:
        message = "no validation query could be built: shipping the tuned model unvalidated"
        result = {"validation": validation_info, "metric": METRIC, "candidates": [], "kept_base": False,
                  "choice": {"checkpoint": "final", "step": final_step, "strength": 1.0, METRIC: None},
                  "validated": False, "message": message}
        atomic_write_json(out_path, result)
        return _info(result)

    groups = signal_groups(queries)

    def score(model: Any) -> dict[str, Any]:
        emb = encode_chunk_texts(model, [c["text"] for c in pool], show_progress=show_progress)
        metrics = evaluate_chunks(model, pool, queries, emb, "chunk", show_progress=show_progress, per_query=True)
        per_query = metrics.pop("per_query")
        scores = {name: [per_query[q][METRIC] for q in ids] for name, ids in groups.items()}
        by_signal = {name: sum(values) / len(values) for name, values in scores.items()}
        return {**headline(metrics), "by_signal": by_signal, SCORES: scores}

    rows: list[dict[str, Any]] = []
    for label, checkpoint, step in candidates(run_dir, weights, final_step):
        interp = StrengthModel.load(weights, base_source=base_source, checkpoint=checkpoint, qlora=qlora,
                                    **load_options)
        for alpha in strengths:
            if alpha == 0.0 and rows and rows[0]["strength"] == 0.0:
                continue  # the base model is the same whichever checkpoint
            metrics = score(interp.set_strength(alpha))
            rows.append({"checkpoint": "base" if alpha == 0.0 else label, "step": None if alpha == 0.0 else step,
                         "strength": alpha, **metrics})
        del interp
    best = choose(rows)
    add_significance(rows)
    base = next((r[METRIC] for r in rows if r["strength"] == 0.0), None)
    kept_base = best["strength"] == 0.0
    message = selection_message(best, base, kept_base)
    result = {"validation": {**validation_info, "queries": len(queries), "chunks_searched": len(pool),
                             "by_signal": {name: len(ids) for name, ids in groups.items()}},
              "metric": METRIC, "min_gain": MIN_GAIN, "min_z": MIN_Z, "candidates": rows, "kept_base": kept_base, "base": base,
              "validated": True,
              "choice": {k: best[k] for k in ("checkpoint", "step", "strength", METRIC)}, "message": message}
    atomic_write_json(out_path, result)
    return _info(result)


def signal_groups(queries: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Query ids per validation signal, for the signals with at least ``MIN_SIGNAL_QUERIES`` queries; when
    none has that many (or the queries name no signal), one group ``"all"`` of every query."""
    groups: dict[str, list[str]] = {}
    for q in queries:
        groups.setdefault(q.get("signal") or "all", []).append(q["query_id"])
    kept = {name: ids for name, ids in groups.items() if len(ids) >= MIN_SIGNAL_QUERIES}
    return kept or {"all": [q["query_id"] for q in queries]}


SCORES = "scores"
"""A candidate row's per-query METRIC values by signal (same query order in every row); not written out."""


def paired_z(values: Sequence[float], base: Sequence[float]) -> float:
    """The mean of the per-query differences ``values - base`` over its standard error (inf when every
    difference is the same positive number, 0 when they are all 0, -inf when the same negative one)."""
    diffs = [v - b for v, b in zip(values, base, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    if var <= 0.0:
        return 0.0 if abs(mean) <= TIE else float("inf") if mean > 0 else float("-inf")
    return mean / (var / n) ** 0.5


def signal_gains(row: dict[str, Any], base: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{signal: (gain, z)}`` of ``row`` over ``base`` (one ``"all"`` entry on METRIC when the rows name
    no signal); z is ``paired_z`` when both rows carry their per-query scores, else inf (untested)."""
    signals = base.get("by_signal") or {}
    if not signals:
        return {"all": (row[METRIC] - base[METRIC], float("inf"))}
    out = {}
    for name, value in signals.items():
        mine, theirs = (row.get(SCORES) or {}).get(name), (base.get(SCORES) or {}).get(name)
        z = paired_z(mine, theirs) if mine is not None and theirs is not None else float("inf")
        out[name] = (row["by_signal"][name] - value, z)
    return out


def worst_gain(row: dict[str, Any], base: dict[str, Any], min_z: float = MIN_Z) -> float:
    """The smallest gain of ``row`` over ``base`` across the validation signals, or -inf when a signal's
    gain is under ``min_z`` standard errors (not significant: it cannot ship)."""
    gains = signal_gains(row, base).values()
    if any(z < min_z for _, z in gains):
        return float("-inf")
    return min(g for g, _ in gains)


def add_significance(rows: list[dict[str, Any]]) -> None:
    """Replace each row's per-query scores by ``"z"``: its paired z per signal against the base row (in place)."""
    base = next((r for r in rows if r["strength"] == 0.0), None)
    for r in rows:
        if base is not None and r is not base and r.get(SCORES) is not None:
            r["z"] = {name: round(z, 2) if math.isfinite(z) else None  # JSON has no infinity
                      for name, (_, z) in signal_gains(r, base).items()}
    for r in rows:
        r.pop(SCORES, None)


def choose(rows: list[dict[str, Any]], min_gain: float = MIN_GAIN, min_z: float = MIN_Z) -> dict[str, Any]:
    """The candidate to ship (see the module docstring).

    With the base model (strength 0) among ``rows``: the tuned candidate whose worst validation signal
    gains most over the base, if that gain is at least ``min_gain`` and every signal's gain is at least
    ``min_z`` standard errors (rows carrying per-query ``SCORES``), else the base row. Without it (a
    grid that leaves 0 out): the best METRIC. Ties within ``TIE`` go to the smallest strength, then the
    earliest step (the candidate closest to the base model).
    """
    def closest(tied: list[dict[str, Any]]) -> dict[str, Any]:
        return min(tied, key=lambda r: (r["strength"], r["step"] if r["step"] is not None else -1))

    base = next((r for r in rows if r["strength"] == 0.0), None)
    if base is None:
        top = max(r[METRIC] for r in rows)
        return closest([r for r in rows if r[METRIC] >= top - TIE])
    gains = [(worst_gain(r, base, min_z), r) for r in rows if r["strength"] > 0.0]
    best = max((g for g, _ in gains), default=None)
    if best is None or best < min_gain - TIE:
        return base
    return closest([r for g, r in gains if g >= best - TIE])


def selection_message(best: dict[str, Any], base: float | None, kept_base: bool) -> str:
    """The one-line verdict: kept the base model, or which checkpoint and strength, with the scores."""
    if kept_base:
        return (f"kept the base model: no trained candidate beat it by {MIN_GAIN} {METRIC} and {MIN_Z:g} standard "
                f"errors on every validation signal (base {best[METRIC]:.4f})")
    against = f" vs base {base:.4f}" if base is not None else ""
    return (f"selected {best['checkpoint']} at adapter strength {best['strength']:g} "
            f"(validation {METRIC} {best[METRIC]:.4f}{against})")


def _info(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("choice", "kept_base", "validated", "message")} | {"base": result.get("base")}


def read_selection(path: Path) -> dict[str, Any]:
    """selection.json as written by ``select_stage``; EmbtuneError naming it when unreadable."""
    import json

    from embtune.errors import EmbtuneError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmbtuneError(f"cannot read the selection ({exc}); run again with --force", path=path) from None


def report_lines(selection: dict[str, Any] | None) -> list[str]:
    """The report.md section on the selection (empty when selection was off)."""
    if not selection:
        return []
    v = selection.get("validation", {})
    lines = ["## Selection", "", selection.get("message", ""), "",
             f"Validated on {v.get('queries', 0)} pseudo-queries ({', '.join(v.get('signals', []))}, a signal the "
             f"model was not trained on) of {v.get('documents', 0)} held-out documents; labelled test queries "
             "are never used to choose.", ""]
    rows = selection.get("candidates") or []
    if rows:
        names = list(rows[0].get("by_signal") or {})
        lines += [f"A trained candidate ships only if it gains at least {selection.get('min_gain', MIN_GAIN)} "
                  f"{METRIC} over the base on every signal, and at least {selection.get('min_z', MIN_Z):g} standard "
                  "errors of the paired per-query differences (z).", "",
                  markdown_table(["checkpoint", "strength", f"validation {METRIC}", *(f"{n} (z)" for n in names)],
                                 [[r["checkpoint"], f"{r['strength']:g}", f"{r[METRIC]:.4f}",
                                   *(f"{r['by_signal'][n]:.4f}{_z(r, n)}" for n in names)] for r in rows]), ""]
    return lines


def _z(row: dict[str, Any], name: str) -> str:
    z = (row.get("z") or {}).get(name)
    return "" if z is None else f" ({z:+.1f})"


def run_selection(pipe: Any, train_info: dict[str, Any], weights: Path) -> dict[str, Any]:
    """Run the validation and select stages in ``pipe`` (a from-corpus Pipeline) after training, from the
    train stage's info and its ``weights`` folder; returns their infos by stage name."""
    from embtune.models.names import resolve_model
    from embtune.training.checkpoint import list_checkpoints

    settings = pipe.settings
    chunks, pairs = pipe.path("chunks.jsonl"), pipe.path("pairs.jsonl")
    held = validation_documents(pipe.manifest.entry("split")["info"].get("held_out_documents", []), settings.seed)
    validation = pipe.path(VALIDATION)
    info = {"validation": pipe.stage(
        "validation", {"chunks": chunks, "pairs": pairs},
        {"documents": held, "seed": settings.seed, "limit": MAX_QUERIES, "tags": "signal"},
        [VALIDATION], lambda: validation_stage(chunks, pairs, held, validation, settings.seed,
                                               show_progress=settings.show_progress))}
    step = train_info.get("steps")
    kept = {f"step-{n}": str(pipe.digest(path / "trainable.safetensors"))
            for n, path in list_checkpoints(pipe.dir) if step is None or n < step}
    options = {k: v for k, v in settings.load_options(base=False).items() if k != "dtype"}  # fp32, prompts saved
    info["select"] = pipe.stage(
        "select", {"weights": weights, "chunks": chunks, "validation": validation, "model": pipe.model_id(), **kept},
        {"strengths": list(settings.strengths), "qlora": settings.qlora, "metric": METRIC, "min_gain": MIN_GAIN,
         "min_z": MIN_Z,
         "max_seq_length": settings.max_seq_length,
         "documents": held},
        [SELECTION], lambda: select_stage(pipe.dir, weights, step, chunks, validation, held, pipe.path(SELECTION),
                                          settings.strengths, resolve_model(settings.model), settings.qlora, options,
                                          info["validation"], settings.show_progress))
    return info
