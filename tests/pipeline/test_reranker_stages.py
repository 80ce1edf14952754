"""`embtune from-corpus --reranker`: a reranker trained from the run's pairs, and the two-stage rows.

The rows are checked against the pieces they claim to be: the dense row is the report's "after"
(same model, same queries, same scoring), and the rerank row equals reordering the dense ranking by
the saved reranker's own ``CrossEncoder.predict`` (plain sentence-transformers) and scoring it with
the pipeline's evaluation.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pipeline_helpers import TINY_ARGS, invoke

from embtune.pipeline.evaluation import REPORT_METRICS, evaluate_rankings, headline, rank_chunks, search_depth
from embtune.pipeline.records import read_chunks, read_eval


def test_from_corpus_trains_a_reranker_and_reports_two_stage_rows(tmp_path, small_corpus, tiny_model):
    from sentence_transformers import CrossEncoder

    from embtune.models.inference import load_inference_model

    run = tmp_path / "run"
    args = ["from-corpus", str(small_corpus), "--out", str(run), "--model", tiny_model, *TINY_ARGS,
            "--max-steps", "3", "--batch-size", "8", "--reranker", tiny_model, "--rerank-top", "5",
            "--no-select-strength"]
    first = invoke(*args)
    report = json.loads((run / "report.json").read_text())
    rows = {row["method"]: row for row in report["two_stage"]["rows"]}
    assert list(rows)[0] == "dense (tuned)" and "dense + tuned reranker" in rows
    assert all(row["ms_per_query"] >= 0 for row in rows.values())
    dense = rows["dense (tuned)"]
    assert {k: dense[k] for k in REPORT_METRICS} == pytest.approx(report["after"], abs=1e-6)
    assert "## Two-stage retrieval" in (run / "report.md").read_text()
    assert "reranker_train" in first.output

    # the rerank row, rebuilt from plain ST: the reranker folder, its predict, the same scoring
    reranker = CrossEncoder(str(run / "reranker"), device="cpu")
    chunks = read_chunks(run / "chunks.jsonl", fields=("id", "doc_id", "text"))
    queries = read_eval(run / "eval.jsonl", {c["id"] for c in chunks})
    texts = {c["id"]: c["text"] for c in chunks}
    merged = load_inference_model(run / "merged")
    depth = max(search_depth(chunks, "chunk"), 5)
    emb = np.load(run / "work" / "chunk_embeddings.merged.npy")
    rankings = rank_chunks(merged, [q["query"] for q in queries], [c["id"] for c in chunks], emb, depth,
                           show_progress=False)
    reranked = []
    for query, ranking in zip(queries, rankings):
        scores = reranker.predict([(query["query"], texts[c]) for c in ranking[:5]], activation_fn=torch.nn.Identity())
        order = np.argsort(-np.asarray(scores), kind="stable")
        reranked.append([ranking[i] for i in order] + ranking[5:])
    expected = headline(evaluate_rankings(chunks, queries, reranked, "chunk"))
    got = rows["dense + tuned reranker"]
    assert {k: got[k] for k in REPORT_METRICS} == pytest.approx(expected, abs=1e-6)

    # a rerun skips both stages; the reranker folder is a plain ST CrossEncoder folder
    again = invoke(*args)
    assert "reranker_train" in again.output and "skipped" in again.output
    manifest = json.loads((run / "manifest.json").read_text())["stages"]
    assert {"reranker_train", "two_stage"} <= set(manifest)
    assert json.loads((run / "reranker" / "config_sentence_transformers.json").read_text())["model_type"] == "CrossEncoder"


def test_rerank_top_must_be_positive(tmp_path, small_corpus, tiny_model):
    from click.testing import CliRunner

    from embtune.cli import main

    result = CliRunner().invoke(main, ["from-corpus", str(small_corpus), "--out", str(tmp_path / "r"),
                                       "--reranker", "default", "--rerank-top", "0"])
    assert result.exit_code == 2 and "--rerank-top" in result.output
