"""`embtune eval`: the core's exact search, one row per ``--dims`` size, with embtune-faiss absent
(FAISS indexes are `embtune-faiss eval`, tests/integrations/test_faiss.py)."""
from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from cli_helpers import write_tiny_beir

from embtune.cli import main


def test_eval_runs_without_embtune_faiss(monkeypatch, tmp_path, tiny_model):
    """``embtune eval`` ranks with the core's exact search: it works with embtune-faiss unimportable and
    its rows are `evaluate_retrieval` of the same model, at full size and truncated (Matryoshka)."""
    import json

    from embtune.data import load_beir
    from embtune.eval import evaluate_retrieval
    from embtune.models.inference import load_inference_model

    for name in ("embtune_faiss", "embtune_faiss.evaluation", "embtune_faiss.cli"):
        monkeypatch.setitem(sys.modules, name, None)  # as if embtune-faiss were not installed
    write_tiny_beir(tmp_path)
    result = CliRunner().invoke(main, ["eval", tiny_model, "--data", str(tmp_path), "--dims", "64,16", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["dims"] for row in rows] == [64, 16]
    data = load_beir(tmp_path)
    model = load_inference_model(tiny_model)
    for row, cut in zip(rows, (None, 16)):
        expected = evaluate_retrieval(model, data.corpus, data.queries, data.split_qrels("test"),
                                      show_progress=False, truncate_dim=cut)
        assert row == {"dims": row["dims"], **{k: pytest.approx(expected[k], abs=1e-6) for k in
                                              ("ndcg@10", "recall@10", "mrr@10", "map@100")},
                       "num_queries": expected["num_queries"]}
    table = CliRunner().invoke(main, ["eval", tiny_model, "--data", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "| dims |" in table.stdout and "| 64 |" in table.stdout
    bad = CliRunner().invoke(main, ["eval", tiny_model, "--data", str(tmp_path), "--index", "HNSW32"])
    assert bad.exit_code == 2 and "--index" in bad.output
