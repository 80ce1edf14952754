"""Units of the from-corpus pipeline that need no model: manifest keys, records, labels, settings, report."""
from __future__ import annotations

import json
import math

import pytest

from embtune.errors import ConfigError, DataFormatError, EmbtuneError
from embtune.data.beir import read_queries
from embtune.pairs.labels import read_label_qrels
from embtune.pipeline.eval_labels import chunks_by_doc, eval_queries_from_labels
from embtune.pipeline.manifest import Manifest, hash_path, stage_key
from embtune.pairs.types import Pair
from embtune.pipeline.records import (EVAL_FIELDS, EVAL_OPTIONAL, as_record, read_eval, read_pairs, write_pairs,
                                      write_jsonl)
from embtune.pipeline.run_report import build_report, report_markdown, write_report
from embtune.pipeline.settings import RunSettings, parse_exports
from embtune.pipeline.training import corpus_pairs_data, is_corpus_pairs_file


def test_hash_path_ignores_hidden_temp_files_and_sees_content(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    first = hash_path(folder)
    (folder / ".a.txt.123.tmp").write_text("half-written")
    assert hash_path(folder) == first
    (folder / "a.txt").write_text("two")
    assert hash_path(folder) != first
    with pytest.raises(EmbtuneError, match="does not exist"):
        hash_path(tmp_path / "nope")


def test_manifest_skips_only_same_key_with_outputs(tmp_path):
    m = Manifest.open(tmp_path, "from-corpus")
    key = stage_key("chunks", {"a": 1}, {"corpus": "h1"})
    assert key != stage_key("chunks", {"a": 2}, {"corpus": "h1"})
    assert key != stage_key("chunks", {"a": 1}, {"corpus": "h2"})
    (tmp_path / "chunks.jsonl").write_text("{}\n")
    m.finish("chunks", key, ["chunks.jsonl"], 1.0, {"chunks": 3})
    again = Manifest.open(tmp_path, "from-corpus")
    assert again.is_done("chunks", key)
    assert not again.is_done("chunks", "other")
    (tmp_path / "chunks.jsonl").unlink()
    assert not again.is_done("chunks", key)


def test_manifest_corrupt_names_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EmbtuneError, match="manifest.json.*--force"):
        Manifest.open(tmp_path, "from-corpus")


def test_write_jsonl_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"a": 1}])

    def boom():
        yield {"a": 2}
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        write_jsonl(path, boom())
    assert path.read_text() == '{"a": 1}\n'  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


PAIR = {"query": "q", "positive": "p", "positive_id": "c1", "doc_id": "d1", "builder": "heuristic",
        "negatives": ["n1", "n2"], "negative_ids": ["c2", "c3"]}


def test_read_pairs_and_conversion_to_training_rows(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [PAIR, {**PAIR, "query": "q2", "negatives": ["n3"], "negative_ids": ["c4"]}])
    assert is_corpus_pairs_file(path)
    pairs = read_pairs(path)  # the one pair type, from builder to training rows
    assert pairs[0] == Pair.from_dict(PAIR) and pairs[1].negative_ids == ["c4"]
    copy = tmp_path / "copy.jsonl"
    assert write_pairs(copy, pairs) == 2 and copy.read_text() == path.read_text()
    data = corpus_pairs_data(path)
    assert data.columns == ["anchor", "positive", "negative_1"]
    assert data.rows[0] == {"anchor": "q", "positive": "p", "negative_1": "n1"}
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [PAIR, {**PAIR, "negative_ids": ["c2"]}])
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: .*negative_ids"):
        read_pairs(bad)


def test_read_eval_checks_chunk_ids(tmp_path):
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, [{"query_id": "1", "query": "q", "relevant": ["c9"]}])
    with pytest.raises(DataFormatError, match=r"eval.jsonl:1: .*'c9'"):
        read_eval(path, {"c1"})


def test_labels_map_documents_to_all_their_chunks(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "1", "text": "what"}\n{"_id": "2", "text": "who"}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\tdA\t1\n2\tdB\t0\n2\tdC\t1\n")
    q = read_queries(queries)
    judgements = read_label_qrels(qrels, q, {"dA", "dB", "dC"})
    chunks = [{"id": "a1", "doc_id": "dA"}, {"id": "a2", "doc_id": "dA"}, {"id": "b1", "doc_id": "dB"}]
    records, dropped = eval_queries_from_labels(judgements, q, chunks_by_doc(chunks))
    # query 2's only relevant document (dC) has no chunk: it cannot be evaluated and is counted
    assert records == [{"query_id": "1", "query": "what", "relevant": ["a1", "a2"]}] and dropped == 1


def test_graded_labels_keep_their_grades_in_eval_records(tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "1", "text": "what"}\n{"_id": "2", "text": "who"}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("1\tdA\t2\n1\tdB\t1\n1\tdC\t0\n2\tdB\n")
    q = read_queries(queries)
    judgements = read_label_qrels(qrels, q, {"dA", "dB", "dC"})
    assert judgements == [("1", "dA", 2), ("1", "dB", 1), ("2", "dB", 1)]
    chunks = [{"id": "a1", "doc_id": "dA"}, {"id": "a2", "doc_id": "dA"}, {"id": "b1", "doc_id": "dB"},
              {"id": "c1", "doc_id": "dC"}]
    records, dropped = eval_queries_from_labels(judgements, q, chunks_by_doc(chunks))
    assert dropped == 0
    assert records == [
        {"query_id": "1", "query": "what", "relevant": ["a1", "a2", "b1"],
         "grades": {"a1": 2, "a2": 2, "b1": 1}},
        {"query_id": "2", "query": "who", "relevant": ["b1"]},  # all grades 1: the binary record of before
    ]
    # what the split stage writes (as_record with EVAL_FIELDS + EVAL_OPTIONAL) keeps the grades
    assert [as_record(r, EVAL_FIELDS, EVAL_OPTIONAL) for r in records] == records
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, records)
    assert read_eval(path, {"a1", "a2", "b1", "c1"}) == records
    write_jsonl(path, [{**records[0], "grades": {"a1": 0}}])
    with pytest.raises(DataFormatError, match=r"eval.jsonl:1: field 'grades'"):
        read_eval(path)


def _settings(tmp_path, **kw):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    return RunSettings(corpus=corpus, out=tmp_path / "out", **kw)


def test_settings_builder_resolution(tmp_path):
    (tmp_path / "l.tsv").write_text("x")
    (tmp_path / "q.jsonl").write_text("x")
    assert _settings(tmp_path).check().builder == "heuristic"
    assert _settings(tmp_path, llm_url="http://x", llm_model="m").check().builder == "llm"
    s = _settings(tmp_path, labels=tmp_path / "l.tsv", queries=tmp_path / "q.jsonl").check()
    assert s.builder == "labels"
    with pytest.raises(ConfigError, match="--labels is only used"):
        _settings(tmp_path, pairs="heuristic", labels=tmp_path / "l.tsv", queries=tmp_path / "q.jsonl").check()
    with pytest.raises(ConfigError, match="--chunk-overlap"):
        _settings(tmp_path, chunk_tokens=32, chunk_overlap=32).check()


def test_parse_exports():
    assert parse_exports("gguf, tei,gguf") == ("gguf", "tei")
    with pytest.raises(ConfigError, match="unknown format 'pdf'"):
        parse_exports("gguf,pdf")


def test_report_files(tmp_path):
    before = {"recall@1": 0.1, "recall@5": 0.3, "recall@10": 0.4, "recall@100": 0.9, "ndcg@10": 0.25,
              "mrr@10": 0.2, "map@100": 0.21, "precision@1": 0.1}
    after = {k: v + 0.05 for k, v in before.items()}
    report = build_report(before, after, evaluation={"queries": 5, "source": "held out", "chunks": 40},
                          loss_history=[[1, 2.0], [2, 1.5]], counts={"chunks": 40})
    assert "precision@1" not in report["before"]
    assert report["delta"]["ndcg@10"] == pytest.approx(0.05)
    md = report_markdown(report)
    assert "| before |" in md and "| after |" in md and "0.3000" in md
    paths = write_report(tmp_path, report)
    assert json.loads(paths[0].read_text())["after"]["ndcg@10"] == pytest.approx(0.3)
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FixedQueryModel:
    """Test double: ``encode_query`` returns preset embeddings (the chunk side is given as a matrix)."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode_query(self, texts, **kwargs):
        import torch

        return torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32)


def test_evaluate_chunk_and_document_levels():
    import numpy as np

    from embtune.pipeline.evaluation import documents_in_order, evaluate_chunks

    chunks = [{"id": "a1", "doc_id": "A"}, {"id": "a2", "doc_id": "A"}, {"id": "b1", "doc_id": "B"},
              {"id": "c1", "doc_id": "C"}]
    # cosine to the query [1, 0]: a2 (1.0) > b1 (0.8) > a1 (0.6) > c1 (0.0)
    emb = np.array([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    model = _FixedQueryModel({"q": [1.0, 0.0]})
    queries = [{"query_id": "1", "query": "q", "relevant": ["a1", "a2"]}]
    chunk_level = evaluate_chunks(model, chunks, queries, emb, "chunk", show_progress=False)
    # chunks a2 (rank 1) and a1 (rank 3) relevant: recall@1 = 1/2, MRR = 1
    assert chunk_level["recall@1"] == pytest.approx(0.5) and chunk_level["mrr@10"] == pytest.approx(1.0)
    doc_level = evaluate_chunks(model, chunks, queries, emb, "document", show_progress=False)
    # documents A (via a2), B, C: the single relevant document A is first
    assert doc_level["recall@1"] == pytest.approx(1.0) and doc_level["ndcg@10"] == pytest.approx(1.0)
    assert documents_in_order(["a2", "b1", "a1", "c1"], {c["id"]: c["doc_id"] for c in chunks}) == ["A", "B", "C"]
    with pytest.raises(EmbtuneError, match="one row per chunk"):
        evaluate_chunks(model, chunks, queries, emb[:3], "chunk", show_progress=False)
    # graded labels: A (score 1) ranked 1st, B (score 3) 2nd -> linear-gain nDCG of embtune.eval
    graded = [{"query_id": "1", "query": "q", "relevant": ["a1", "a2", "b1"],
               "grades": {"a1": 1, "a2": 1, "b1": 3}}]
    doc_graded = evaluate_chunks(model, chunks, graded, emb, "document", show_progress=False)
    l3 = math.log2(3)
    assert doc_graded["ndcg@10"] == pytest.approx((1 + 3 / l3) / (3 + 1 / l3), abs=1e-12)
    assert doc_graded["recall@1"] == pytest.approx(0.5) and doc_graded["mrr@10"] == pytest.approx(1.0)
    chunk_graded = evaluate_chunks(model, chunks, graded, emb, "chunk", show_progress=False)
    # chunks a2 (1), b1 (3), a1 (1) at ranks 1-3; ideal order b1, a1/a2
    assert chunk_graded["ndcg@10"] == pytest.approx((1 + 3 / l3 + 1 / 2) / (3 + 1 / l3 + 1 / 2), abs=1e-12)


def test_report_names_its_evaluation_source_first(tmp_path):
    from types import SimpleNamespace

    from embtune.pipeline.sources import evaluation_source

    before = {"ndcg@10": 0.25, "recall@10": 0.4}
    labelled = SimpleNamespace(eval_labels=tmp_path / "test-qrels.tsv", builder="heuristic")
    synthetic = SimpleNamespace(eval_labels=None, builder="heuristic")
    held_labels = SimpleNamespace(eval_labels=None, builder="labels")
    assert evaluation_source(labelled, {}, {}) == {"kind": "labelled",
                                                   "text": "your labelled queries (test-qrels.tsv)"}
    assert evaluation_source(held_labels, {"builder": "labels"}, {})["kind"] == "labelled"
    source = evaluation_source(synthetic, {"builder": "heuristic"}, {"eval_builders": ["heuristic:title"]})
    assert source["kind"] == "synthetic" and source["text"] == ("synthetic queries from builder heuristic:title — "
                                                                "not a measure of your users' searches")
    keywords = evaluation_source(synthetic, {"builder": "heuristic"}, {"eval_builders": ["heuristic:keywords"]})
    assert "copied from the text" in keywords["text"]
    for src in (source, evaluation_source(labelled, {}, {})):
        report = {"evaluation_source": src["text"], **build_report(before, None, evaluation={"queries": 3})}
        first = report_markdown(report).splitlines()[0]
        assert first == f"# embtune from-corpus report: evaluated on {src['text']}"
        path = write_report(tmp_path, report)[0]
        assert next(iter(json.loads(path.read_text()))) == "evaluation_source"


def test_query_changes_and_bm25_row_in_report():
    from embtune.pipeline.run_report import query_changes

    before = {"a": {"ndcg@10": 0.0, "rank": None}, "b": {"ndcg@10": 1.0, "rank": 1},
              "c": {"ndcg@10": 0.0, "rank": 40}, "d": {"ndcg@10": 0.5, "rank": 3}, "e": {"ndcg@10": 0.2, "rank": 9}}
    after = {"a": {"ndcg@10": 1.0, "rank": 1}, "b": {"ndcg@10": 0.5, "rank": 3},
             "c": {"ndcg@10": 0.0, "rank": 12}, "d": {"ndcg@10": 0.5, "rank": 3}, "e": {"ndcg@10": 0.3, "rank": 7}}
    texts = {q: f"query {q} | with a pipe" for q in before}
    changes = query_changes(before, after, texts, bm25={"a": {"rank": 2}})
    # a rose most, e a little, c only below the top 10 (rank 40 -> 12); d unchanged; b got worse
    assert [r["query_id"] for r in changes["improved"]] == ["a", "e", "c"]
    assert [r["query_id"] for r in changes["worse"]] == ["b"]
    assert changes["improved"][0] == {"query_id": "a", "query": "query a | with a pipe", "rank_before": None,
                                      "rank_after": 1, "ndcg@10_before": 0.0, "ndcg@10_after": 1.0, "rank_bm25": 2}
    assert len(query_changes(before, after, texts, n=1)["improved"]) == 1
    metrics = {"ndcg@10": 0.5, "recall@10": 0.6}
    report = {**build_report(metrics, metrics, evaluation={"queries": 5, "level": "chunk"}),
              "bm25": {"ndcg@10": 0.7, "recall@10": 0.8}, "query_changes": changes}
    md = report_markdown(report)
    assert "| BM25 (keywords) | 0.8000 | 0.7000 |" in md
    assert "| query a \\| with a pipe | >100 → 1 | 0.000 → 1.000 | 2 |" in md
    assert md.index("## Queries that improved most") < md.index("## Queries that got worse")
    skipped = report_markdown({**report, "bm25": {"skipped": "bm25s is not installed (pip install bm25s)"}})
    assert "BM25 (keywords) |" not in skipped and "No BM25 row: bm25s is not installed" in skipped


def test_per_query_metrics_average_to_the_means():
    from embtune.eval.metrics import per_query_metrics, retrieval_metrics

    ranked = {"1": ["x", "a", "y"], "2": ["b", "z"], "3": ["w"]}
    qrels = {"1": {"a": 1}, "2": {"b": 2, "c": 1}, "3": {"v": 1}, "4": {"u": 0}}
    per = per_query_metrics(ranked, qrels, (1, 10))
    assert set(per) == {"1", "2", "3"}  # a query without a relevant document is left out, as from the means
    assert [per[q]["rank"] for q in ("1", "2", "3")] == [2, 1, None]
    means = retrieval_metrics(ranked, qrels, (1, 10))
    for key in ("ndcg@10", "recall@1", "mrr@10", "map@10"):
        assert sum(p[key] for p in per.values()) / 3 == pytest.approx(means[key])


def test_unretrievable_labelled_documents_count_as_misses(tmp_path):
    import numpy as np

    from embtune.pipeline.evaluation import evaluate_chunks

    judgements = [("1", "dA", 1), ("1", "dEmpty", 1), ("2", "dEmpty", 2)]
    q = {"1": "q", "2": "q2"}
    chunks = [{"id": "a1", "doc_id": "dA"}, {"id": "b1", "doc_id": "dB"}]
    records, dropped = eval_queries_from_labels(judgements, q, chunks_by_doc(chunks), {"dEmpty"})
    assert dropped == 0 and records == [
        {"query_id": "1", "query": "q", "relevant": ["a1"], "unretrievable": {"dEmpty": 1}},
        {"query_id": "2", "query": "q2", "relevant": [], "unretrievable": {"dEmpty": 2}}]
    path = tmp_path / "eval.jsonl"
    write_jsonl(path, [as_record(r, EVAL_FIELDS, EVAL_OPTIONAL) for r in records])
    assert read_eval(path, {"a1", "b1"}) == records
    write_jsonl(path, [{"query_id": "1", "query": "q", "relevant": []}])
    with pytest.raises(DataFormatError, match=r"eval.jsonl:1: field 'relevant' is empty"):
        read_eval(path)
    emb = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    model = _FixedQueryModel({"q": [1.0, 0.0], "q2": [1.0, 0.0]})
    metrics = evaluate_chunks(model, chunks, records, emb, "document", show_progress=False, per_query=True)
    # query 1 finds dA first but never dEmpty: recall 1/2; query 2 can find nothing: 0
    assert metrics["num_queries"] == 2 and metrics["recall@100"] == pytest.approx(0.25)
    assert metrics["per_query"]["1"]["rank"] == 1 and metrics["per_query"]["2"]["rank"] is None
