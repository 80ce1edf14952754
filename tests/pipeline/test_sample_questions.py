"""The human-written questions shipped for the demo parse, and name only documents of the sample corpus."""
from __future__ import annotations

from pathlib import Path

from embtune.corpus.ingest import read_documents
from embtune.data.beir import read_queries
from embtune.pairs.labels import read_label_qrels

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "sample_corpus"
QUESTIONS = ROOT / "examples" / "sample_questions"


def test_shipped_questions_parse_and_name_sample_documents() -> None:
    queries = read_queries(QUESTIONS / "queries.jsonl")
    doc_ids = {doc.doc_id for doc in read_documents(CORPUS, warn=lambda message: None)}
    judgements = read_label_qrels(QUESTIONS / "qrels.tsv", queries, doc_ids)  # raises on an unknown doc id
    assert 30 <= len(queries) <= 40
    assert {q for q, _, _ in judgements} == set(queries)  # every question has a relevant document
    assert all(score == 1 for _, _, score in judgements)
    assert len({t.lower() for t in queries.values()}) == len(queries)
    assert "LICENSE.md" not in {d for _, d, _ in judgements}


def test_questions_are_outside_the_corpus_folder() -> None:
    assert not (CORPUS / "queries.jsonl").exists() and not (CORPUS / "qrels.tsv").exists()
    assert CORPUS not in QUESTIONS.parents


def test_demo_trains_label_free_and_evaluates_on_the_questions(tmp_path, tiny_model) -> None:
    """`make demo`'s flags: training pairs come from the corpus (heuristic builder, label-free) and the
    before/after evaluation is on the 35 shipped questions."""
    import json

    from click.testing import CliRunner
    from pipeline_helpers import TINY_ARGS

    from embtune.cli import main

    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "from-corpus", str(CORPUS), "--out", str(run), "--model", tiny_model, *TINY_ARGS, "--max-steps", "2",
        "--batch-size", "8", "--eval-labels", str(QUESTIONS / "qrels.tsv"),
        "--queries", str(QUESTIONS / "queries.jsonl")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["builder"].startswith("heuristic") for p in pairs)
    questions = set(read_queries(QUESTIONS / "queries.jsonl").values())
    assert not questions & {p["query"] for p in pairs}  # no shipped question is trained on
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["query"] for e in evals] == list(read_queries(QUESTIONS / "queries.jsonl").values())
    report = json.loads((run / "report.json").read_text())
    assert report["evaluation"]["queries"] == 35 and report["evaluation"]["level"].startswith("document")
    assert report["counts"]["pair_builder"] == "heuristic"
    assert set(report["before"]) == set(report["after"]) and "before" in result.output and "after" in result.output
