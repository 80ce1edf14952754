"""`embtune eval --reranker`: dense, hybrid and dense + rerank rows in one table (embtune.cli.eval_rerank);
the row values themselves are checked in tests/eval/test_two_stage.py."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli_helpers import write_tiny_beir

from embtune.cli import main



@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    return write_tiny_beir(tmp_path_factory.mktemp("beir"))


def _run(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def test_rows_side_by_side(beir, tiny_model):
    from embtune.data import load_beir
    from embtune.eval import evaluate_retrieval
    from embtune.models.inference import load_inference_model

    result = _run(tiny_model, "--data", beir, "--reranker", "default", "--reranker", tiny_model,
                  "--rerank-top", 3, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["method"] for row in rows] == ["dense", "hybrid (BM25 + dense)", "dense + rerank (default)",
                                               f"dense + rerank ({tiny_model})"]
    for row in rows:
        assert set(row) == {"method", "ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100",
                            "num_queries", "ms_per_query"}
        assert row["num_queries"] == 2 and row["ms_per_query"] > 0
        assert all(0 <= row[k] <= 1 for k in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"))
    data = load_beir(beir)
    expected = evaluate_retrieval(load_inference_model(tiny_model), data.corpus, data.queries,
                                  data.split_qrels("test"), show_progress=False)
    assert rows[0] == {**rows[0], **{k: pytest.approx(expected[k], abs=1e-9) for k in
                                     ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")}}

    table = _run(tiny_model, "--data", beir, "--reranker", tiny_model, "--rerank-top", 2)
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert lines[0] == "| method | ndcg@10 | recall@10 | recall@100 | mrr@10 | map@100 | ms/query | queries |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| dense", "| hybrid (BM25 + dense)",
                                                          f"| dense + rerank ({tiny_model})"]


@pytest.mark.parametrize("args, message", [
    (("--reranker", "default", "--rerank-top", "0"), "--rerank-top"),
    (("--rerank-top", "5"), "--rerank-top needs --reranker"),
    (("--reranker", "default", "--dims", "16"), "--dims"),
    (("--reranker", "./no/such/reranker"), "not found"),
])
def test_bad_options_are_one_line_errors(beir, tiny_model, args, message):
    result = _run(tiny_model, "--data", beir, *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


def test_reranker_is_not_for_tasks(tmp_path, tiny_model):
    task = tmp_path / "pairs.jsonl"
    task.write_text('{"text1": "a", "text2": "b", "score": 1}\n')
    result = _run(tiny_model, "--task", "pair-similarity", "--task-data", task, "--reranker", "default")
    assert result.exit_code == 2 and "--task" in result.output, result.output
