"""Corpora that used to abort a from-corpus run, and a report that says what its evaluation is worth:
title-less, punctuation-less text (keyword fallback), BEIR labels naming empty documents, no pair at all."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from pipeline_helpers import TINY_ARGS, invoke, write_plain_corpus

from embtune.cli import main


def run_args(model: str, steps: int = 2) -> list[str]:
    return ["--model", model, *TINY_ARGS, "--max-steps", str(steps), "--batch-size", "8", "--negatives", "0"]


def test_title_less_punctuation_less_corpus_trains(tmp_path, tiny_model):
    """Scraped/OCR'd text (no titles, no punctuation, no stop words) gives no title or cloze pair: the
    heuristic builder falls back to keyword queries with one warning line, and the run finishes."""
    corpus = write_plain_corpus(tmp_path / "plain")
    run = tmp_path / "run"
    result = invoke("from-corpus", str(corpus), "--out", str(run), *run_args(tiny_model))
    fallback = [line for line in result.output.splitlines() if "keyword-query pairs" in line]
    assert len(fallback) == 1 and "gave 0 heuristic pair(s)" in fallback[0], result.output
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and {p["builder"] for p in pairs} == {"heuristic:keywords"}
    assert (run / "merged" / "modules.json").is_file()
    report = json.loads((run / "report.json").read_text())
    assert report["counts"]["train_steps"] == 2 and report["evaluation"]["queries"] > 0
    # evaluated on held-out keyword queries, and the report says what they are worth
    first_line = (run / "report.md").read_text().splitlines()[0]
    assert "synthetic queries from builder heuristic:keywords" in first_line and "copied from the text" in first_line


def test_no_pair_at_all_says_what_to_try(tmp_path, tiny_model):
    corpus = tmp_path / "tiny"
    corpus.mkdir()
    for i, text in enumerate(["alpha beta gamma", "delta epsilon zeta"]):  # no shared word: no keyword query
        (corpus / f"d{i}.txt").write_text(text + "\n")
    result = CliRunner().invoke(main, ["from-corpus", str(corpus), "--out", str(tmp_path / "run"),
                                       *run_args(tiny_model)])
    assert result.exit_code != 0
    assert "not even keyword queries" in result.output and "--labels QRELS.tsv" in result.output, result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def _beir_with_empty_documents(root: Path, corpus: Path) -> tuple[Path, Path, Path, list[Path]]:
    """A BEIR folder (root/beir) of the small corpus's documents plus two whose text is empty, queries
    (a document's title asks for it) and train/test qrels that both name an empty document."""
    folder = root / "beir"
    folder.mkdir(parents=True)
    docs = sorted(corpus.glob("*.md"))
    lines, queries = [], []
    for doc in docs:
        title, _, body = doc.read_text(encoding="utf-8").partition("\n")
        lines.append({"_id": doc.stem, "title": title.lstrip("# "), "text": body.strip()})
        queries.append({"_id": "q" + doc.stem, "text": title.lstrip("# ")})
    lines += [{"_id": "empty1", "title": "", "text": ""}, {"_id": "empty2", "title": "Only a title", "text": "  "}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    queries_path = root / "queries.jsonl"
    queries_path.write_text("".join(json.dumps(q) + "\n" for q in queries))
    train = root / "train.tsv"
    train.write_text("".join(f"q{d.stem}\t{d.stem}\t1\n" for d in docs[:8]) + f"q{docs[0].stem}\tempty1\t1\n")
    test = root / "test.tsv"
    test.write_text("".join(f"q{d.stem}\t{d.stem}\t1\n" for d in docs[8:])
                    + f"q{docs[8].stem}\tempty2\t1\nq{docs[9].stem}\tempty1\t1\n")
    return queries_path, train, test, docs


def test_labels_naming_empty_documents_warn_once_and_finish(tmp_path, small_corpus, tiny_model):
    """BEIR labels that name documents with no text: one warning line with the count, those judgements
    give no training pair, and evaluation keeps them as misses (recall cannot reach 1)."""
    queries, train, test, docs = _beir_with_empty_documents(tmp_path, small_corpus)
    run = tmp_path / "run"
    result = invoke("from-corpus", str(tmp_path / "beir"), "--out", str(run), "--labels", str(train), "--queries",
                    str(queries), "--eval-labels", str(test), *run_args(tiny_model))
    warnings = [line for line in result.output.splitlines() if "with no text" in line]
    assert len(warnings) == 1 and "3 judgement(s) name 2 document(s)" in warnings[0], result.output
    pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and not {p["doc_id"] for p in pairs} & {"empty1", "empty2"}
    evals = {e["query_id"]: e for e in map(json.loads, (run / "eval.jsonl").read_text().splitlines())}
    assert evals["q" + docs[8].stem]["unretrievable"] == {"empty2": 1}
    assert evals["q" + docs[9].stem]["unretrievable"] == {"empty1": 1}
    assert "unretrievable" not in evals["q" + docs[10].stem]
    report = json.loads((run / "report.json").read_text())
    # two of the four queries have a second relevant document that cannot be found: recall@100 <= 6/8
    assert report["evaluation"]["queries"] == 4 and report["evaluation"]["kind"] == "labelled"
    assert report["before"]["recall@100"] <= 0.75 + 1e-9 and report["after"]["recall@100"] <= 0.75 + 1e-9


def test_label_typo_is_still_an_error(tmp_path, small_corpus, tiny_model):
    """Only documents that exist without text are forgiven: an id that is nowhere stays a file:line error."""
    queries, train, test, docs = _beir_with_empty_documents(tmp_path, small_corpus)
    test.write_text(test.read_text() + f"q{docs[8].stem}\tnot-a-doc\t1\n")
    result = CliRunner().invoke(main, ["from-corpus", str(tmp_path / "beir"), "--out", str(tmp_path / "run"),
                                       "--labels", str(train), "--queries", str(queries), "--eval-labels", str(test),
                                       *run_args(tiny_model)])
    assert result.exit_code != 0 and "document id 'not-a-doc' is not among the ingested documents" in result.output
    assert f"{test}:7:" in result.output

