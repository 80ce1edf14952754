"""`embtune label`: scripted judging sessions (skip, quit, a torn answer line, resume) and the CSV round
trip become qrels that `embtune eval` and `from-corpus --eval-labels` read.

The run folder is a real `from-corpus` run of a tiny random BERT on 8 SciFact abstracts (a BEIR
folder), made once per module; each test works on its own copy.
"""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import build_tiny_hf, scifact_dir, torch_threads

from embtune.cli import main
from embtune.labeling.judgements import Answer, AnswerLog
from embtune.labeling.pool import Candidate, merge_pool, question_id, read_questions
from embtune.labeling.session import shorten

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

N_DOCS = 8
K = 3
RUN_ARGS = ["--max-seq-length", "64", "--chunk-tokens", "48", "--chunk-overlap", "8", "--max-steps", "2",
            "--batch-size", "8", "--save-steps", "2", "--quiet"]


def invoke(*args: str, input: str | None = None, code: int = 0):
    result = CliRunner().invoke(main, list(args), input=input)
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> list[dict]:
    """The first N_DOCS SciFact documents."""
    with open(scifact_dir() / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(N_DOCS), fh)]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, docs) -> Path:
    """A finished from-corpus run (chunks.jsonl, merged/, work/*.npy, run_config.toml) on a BEIR corpus."""
    root = tmp_path_factory.mktemp("label")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    model = build_tiny_hf(root / "bert", "bert", seed=0)
    with torch_threads(1):
        invoke("from-corpus", str(corpus), "--out", str(root / "run"), "--model", str(model), *RUN_ARGS)
    return root / "run"


@pytest.fixture
def run(tmp_path, base_run) -> Path:
    """A private copy of the run folder."""
    return Path(shutil.copytree(base_run, tmp_path / "run", symlinks=True))


@pytest.fixture
def questions(tmp_path, docs) -> Path:
    """Two questions (the titles of documents 0 and 1, so BM25 must pool those), and a blank line."""
    path = tmp_path / "questions.txt"
    path.write_text(f"{docs[0]['title']}\n\n{docs[1]['title']}\n", encoding="utf-8")
    return path


def read_pool(run: Path) -> list[tuple[str, list[Candidate]]]:
    data = json.loads((run / "labels" / "pool.json").read_text())
    return [(q["id"], [Candidate(**c) for c in q["candidates"]]) for q in data["questions"]]


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_scripted_sessions_give_qrels_that_embtune_eval_reads(run, questions, docs):
    with torch_threads(1):
        first = invoke("label", str(run), "--questions", str(questions), "-k", str(K),
                       input="y\nn\nmaybe\ns\nq\n")
    pool = read_pool(run)
    (q1, pool1), (q2, pool2) = pool
    assert [q1, q2] == [question_id(docs[0]["title"]), question_id(docs[1]["title"])]
    for qid, candidates in pool:
        doc_ids = [c.doc_id for c in candidates]
        assert len(set(doc_ids)) == len(doc_ids) and K <= len(doc_ids) <= 3 * K
        assert all(c.found_by and set(c.found_by) <= {"base", "tuned", "bm25"} for c in candidates)
    # the question is a document's title: BM25 pools that document
    assert "bm25" in next(c for c in pool1 if c.doc_id == docs[0]["_id"]).found_by
    assert "press y, n, s or q" in first.output and "stopped with" in first.output
    log = [json.loads(line) for line in (run / "labels" / "answers.jsonl").read_text().splitlines()]
    assert [(a["doc_id"], a["relevant"]) for a in log] == [(pool1[0].doc_id, 1), (pool1[1].doc_id, 0),
                                                          (pool1[2].doc_id, None)]
    assert read_tsv(run / "labels" / "qrels.tsv") == [["query-id", "corpus-id", "score"],
                                                      [q1, pool1[0].doc_id, "1"], [q1, pool1[1].doc_id, "0"]]

    # a session killed while writing an answer leaves a torn last line: dropped, that candidate asked again
    with open(run / "labels" / "answers.jsonl", "a") as fh:
        fh.write('{"question_id": "' + q1 + '", "doc_id": "' + pool1[3 % len(pool1)].doc_id)
    remaining = [(q1, c) for c in pool1[3:]] + [(q2, c) for c in pool2]
    relevant = {(q1, pool1[0].doc_id), (q2, pool2[-1].doc_id)}  # the known relevant set
    keys = "".join("y\n" if (q, c.doc_id) in relevant else "n\n" for q, c in remaining)
    with torch_threads(1):
        second = invoke("label", str(run), "-k", str(K), input=keys)  # resumes without --questions
    assert "every pooled candidate is judged" in second.output
    shown = [line.split("document ", 1)[1].split()[0] for line in second.output.splitlines()
             if "· document" in line]
    assert shown == [c.doc_id for _, c in remaining], "resumes at the first unanswered candidate"
    answers = AnswerLog(run / "labels" / "answers.jsonl").read()
    assert len(answers) == len(pool1) + len(pool2)
    skipped = (q1, pool1[2].doc_id)
    expected = {q: {c.doc_id: int((q, c.doc_id) in relevant) for c in cands if (q, c.doc_id) != skipped}
                for q, cands in pool}
    rows = read_tsv(run / "labels" / "qrels.tsv")[1:]
    assert {(q, d, int(s)) for q, d, s in rows} == {(q, d, s) for q, ds in expected.items()
                                                    for d, s in ds.items()}
    queries = [json.loads(line) for line in (run / "labels" / "queries.jsonl").read_text().splitlines()]
    assert queries == [{"_id": q1, "text": docs[0]["title"]}, {"_id": q2, "text": docs[1]["title"]}]

    invoke("label", str(run), "--beir", input="")
    beir = run / "labels" / "beir"
    corpus_ids = [json.loads(line)["_id"] for line in (beir / "corpus.jsonl").read_text().splitlines()]
    assert corpus_ids == [d["_id"] for d in docs]
    assert (beir / "qrels" / "test.tsv").read_text() == (run / "labels" / "qrels.tsv").read_text()

    with torch_threads(1):
        rows = json.loads(invoke("eval", str(run / "merged"), "--data", str(beir), "--json").output
                          .strip().splitlines()[-1])
        from embtune.eval import evaluate_retrieval
        from embtune.models.inference import load_inference_model

        # the same metrics from the known relevant set, through the core's exact search
        want = evaluate_retrieval(load_inference_model(str(run / "merged")),
                                  {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in docs},
                                  {q1: docs[0]["title"], q2: docs[1]["title"]}, expected, show_progress=False)
    for key in ("ndcg@10", "recall@10", "mrr@10", "map@100"):
        assert rows[0][key] == pytest.approx(want[key], abs=1e-6), key
    assert want["num_queries"] == 2


def test_csv_round_trip_feeds_from_corpus_eval_labels(run, questions, tmp_path):
    sheet = tmp_path / "judge.csv"
    with torch_threads(1):
        invoke("label", str(run), "--questions", str(questions), "-k", str(K), "--no-bm25",
               "--csv", str(sheet))
    with open(sheet, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["question_id", "question", "doc_id", "text", "relevant"]
    assert all(r["relevant"] == "" and r["text"] for r in rows)
    assert {s for _, cands in read_pool(run) for c in cands for s in c.found_by} <= {"base", "tuned"}
    assert not (run / "labels" / "answers.jsonl").exists()
    firsts = {}
    for r in rows:  # relevant: the first candidate of each question; the last row left blank (not judged)
        r["relevant"] = "yes" if firsts.setdefault(r["question_id"], r["doc_id"]) == r["doc_id"] else "0"
    rows[-1]["relevant"] = ""
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=";")  # a spreadsheet's ';' is fine
        writer.writeheader()
        writer.writerows(rows)
    invoke("label", str(run), "--from-csv", str(sheet))
    qrels = read_tsv(run / "labels" / "qrels.tsv")[1:]
    assert qrels == [[r["question_id"], r["doc_id"], "1" if r["relevant"] == "yes" else "0"]
                     for r in rows[:-1]]

    chunks = [json.loads(line) for line in (run / "chunks.jsonl").read_text().splitlines()]
    config = tomllib.loads((run / "run_config.toml").read_text())
    other = tmp_path / "labelled-run"
    with torch_threads(1):
        invoke("from-corpus", config["corpus"], "--out", str(other), "--model", config["model"], *RUN_ARGS,
               "--eval-labels", str(run / "labels" / "qrels.tsv"),
               "--queries", str(run / "labels" / "queries.jsonl"))
    evals = [json.loads(line) for line in (other / "eval.jsonl").read_text().splitlines()]
    want = {qid: {c["id"] for c in chunks if c["doc_id"] == doc} for qid, doc in firsts.items()}
    assert {e["query_id"]: set(e["relevant"]) for e in evals} == want
    assert json.loads((other / "report.json").read_text())["after"]


def test_user_errors_are_one_line_naming_file_and_line(run, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"text": "what is DNA methylation"}\n{"_id": 3}\n', encoding="utf-8")
    result = invoke("label", str(run), "--questions", str(bad), code=2)
    assert result.output.strip().splitlines() == [
        f'embtune: error: {bad}:2: each line needs a non-empty "text" string']
    sheet = tmp_path / "a.csv"
    doc = json.loads((run / "chunks.jsonl").read_text().splitlines()[0])["doc_id"]
    sheet.write_text(f"question_id,question,doc_id,text,relevant\nq1,what?,{doc},x,1\nq1,what?,{doc}2,x,1\n")
    result = invoke("label", str(run), "--from-csv", str(sheet), code=2)
    assert result.output.strip().startswith(f"embtune: error: {sheet}:3: document id '{doc}2' is not in")
    sheet.write_text(f'question_id,question,doc_id,text,relevant\nq1,what?,{doc},"two\nlines",maybe\n')
    result = invoke("label", str(run), "--from-csv", str(sheet), code=2)
    assert result.output.strip().startswith(f"embtune: error: {sheet}:2: relevant must be 1/0, y/n")
    missing_run = invoke("label", str(tmp_path / "nope"), "--questions", str(bad), code=2)
    assert missing_run.output.startswith("embtune: error: ") and len(missing_run.output.splitlines()) == 1
    assert "not both" in invoke("label", str(run), "--csv", "a", "--from-csv", "b", code=2).output
    assert "--questions" in invoke("label", str(run), code=2).output


def test_questions_ids_shuffle_and_answer_log(tmp_path):
    txt = tmp_path / "q.txt"
    txt.write_text("how do cells divide\n\nwhat folds proteins\n")
    before = read_questions(txt)
    txt.write_text("a new first question\nhow do cells divide\nwhat folds proteins\n")
    after = read_questions(txt)
    assert [q.id for q in after[1:]] == [q.id for q in before], "adding a line keeps the other ids"
    txt.write_text("same\nsame\n")
    with pytest.raises(Exception, match=r"q.txt:2: same question as line 1"):
        read_questions(txt)
    jl = tmp_path / "q.jsonl"
    jl.write_text('{"_id": "a1", "text": "x y"}\n{"text": "z"}\n')
    assert [(q.id, q.text) for q in read_questions(jl)] == [("a1", "x y"), (question_id("z"), "z")]

    rankings = {"base": [("d1", "c1"), ("d2", "c2")], "tuned": [("d2", "c9"), ("d3", "c3")],
                "bm25": [("d1", "c7")]}
    pool = merge_pool("q", rankings, seed=1)
    assert sorted(c.doc_id for c in pool) == ["d1", "d2", "d3"]
    by_doc = {c.doc_id: c for c in pool}
    assert by_doc["d1"].found_by == ["base", "bm25"] and by_doc["d1"].chunk_id == "c1"
    assert by_doc["d2"].chunk_id == "c9", "the chunk of the system that ranked the document highest"
    reordered = merge_pool("q", dict(reversed(list(rankings.items()))), seed=1)
    assert [c.doc_id for c in reordered] == [c.doc_id for c in pool], "order does not tell who found what"
    orders = {tuple(c.doc_id for c in merge_pool(f"q{i}", rankings, seed=1)) for i in range(20)}
    assert len(orders) > 1, "shuffled per question"

    log = AnswerLog(tmp_path / "labels" / "answers.jsonl")
    log.append([Answer("q", "text", "d1", 1), Answer("q", "text", "d2", None)])
    log.append([Answer("q", "text", "d1", 0)])
    with open(log.path, "ab") as fh:
        fh.write(b'{"question_id": "q", "qu')
    assert {k: a.relevant for k, a in log.read().items()} == {("q", "d1"): 0, ("q", "d2"): None}
    assert log.path.read_bytes().endswith(b'"relevant": 0}\n'), "the torn line is cut off"
    assert shorten("word " * 50, 22) == "word word word word …" and shorten("short", 0) == "short"
