"""embtune_faiss: real FAISS indexes, the evaluation rows, BM25 hybrid, persistence and ``embtune-faiss eval``."""
from __future__ import annotations

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
pytest.importorskip("bm25s")

from integration_data import scifact_slice, write_beir  # noqa: E402

import embtune_faiss  # noqa: E402
from embtune.errors import ConfigError, DataFormatError  # noqa: E402
from embtune.eval import evaluate_retrieval, exact_search, retrieval_metrics  # noqa: E402
from embtune_faiss import (EmbtuneFaissIndex, bm25_rankings, evaluate, evaluate_embeddings,  # noqa: E402
                           recall_vs_exact, reciprocal_rank_fusion, training_requirements)

EXPECTED_ALL = ["EmbtuneFaissIndex", "bm25_rankings", "evaluate", "evaluate_embeddings", "recall_vs_exact",
                "reciprocal_rank_fusion", "rows_table", "training_requirements"]


def clustered(n: int, dim: int, seed: int = 0, centers: int = 16) -> np.ndarray:
    """Deterministic vectors around a few centres (ANN indexes behave as on real embeddings)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim))
    return (c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim))).astype(np.float32)


def test_all_exports():
    assert sorted(embtune_faiss.__all__) == sorted(EXPECTED_ALL)


def test_flat_rows_equal_evaluate_retrieval(tiny_st, eval_task):
    ks = (1, 5, 10, 100)
    ref = evaluate_retrieval(tiny_st, eval_task.corpus, eval_task.queries, eval_task.qrels, ks=ks,
                             show_progress=False)
    rows = evaluate(tiny_st, eval_task.corpus, eval_task.queries, eval_task.qrels, indexes="Flat", ks=ks,
                    show_progress=False)
    assert [(r["index"], r["dims"], r["method"]) for r in rows] == [("Flat", 64, "dense")]
    metric_keys = [k for k in ref if "@" in k]
    assert len(metric_keys) == 6 * len(ks)
    for key in metric_keys:
        assert rows[0][key] == pytest.approx(ref[key], abs=1e-6), key
    assert all(rows[0][f"recall_vs_exact@{k}"] == pytest.approx(1.0) for k in ks)
    assert rows[0]["num_queries"] == ref["num_queries"]


def test_matryoshka_row_matches_truncated_exact_search():
    docs, queries = clustered(300, 48, seed=1), clustered(30, 48, seed=2)
    doc_ids = [f"d{i:03d}" for i in range(300)]
    qids = [f"q{i}" for i in range(30)]
    full = exact_search(queries, docs, doc_ids, k=3)[1]
    qrels = {q: {ranked[0]: 1, ranked[2]: 1} for q, ranked in zip(qids, full)}
    rows = evaluate_embeddings(queries, docs, doc_ids, qids, qrels, indexes="Flat", dims=[48, 8], ks=(1, 10))
    assert [r["dims"] for r in rows] == [48, 8]
    cut = lambda a: a[:, :8] / np.linalg.norm(a[:, :8], axis=1, keepdims=True)  # noqa: E731
    ranked8 = exact_search(cut(queries), cut(docs), doc_ids, k=10)[1]
    expected = retrieval_metrics(dict(zip(qids, ranked8)), qrels, ks=(1, 10))
    for key in ("ndcg@10", "recall@10", "mrr@10", "map@10", "precision@1"):
        assert rows[1][key] == pytest.approx(expected[key], abs=1e-6)
    assert rows[0]["recall@10"] == pytest.approx(1.0)  # full-size exact search finds both relevant docs
    assert rows[1]["recall@10"] < rows[0]["recall@10"]  # 8 dims lose some


def test_ann_rows_report_what_the_index_loses():
    docs, queries = clustered(2000, 32, seed=3), clustered(50, 32, seed=4)
    doc_ids = [str(i) for i in range(2000)]
    qids = [f"q{i}" for i in range(50)]
    exact = exact_search(queries, docs, doc_ids, k=1)[1]
    qrels = {q: {r[0]: 1} for q, r in zip(qids, exact)}
    rows = evaluate_embeddings(queries, docs, doc_ids, qids, qrels, indexes=["HNSW32", "IVF16,PQ8x4"],
                               ks=(10,), search_params="nprobe=2")
    hnsw, ivfpq = rows
    assert hnsw["recall_vs_exact@10"] > 0.9
    assert 0.0 < ivfpq["recall_vs_exact@10"] < hnsw["recall_vs_exact@10"]
    assert ivfpq["search_params"] == "nprobe=2" and hnsw["search_params"] == "efSearch=64"


def test_recall_vs_exact_by_hand():
    found = [["a", "b", "x"], ["c"]]
    exact = [["a", "b", "c"], ["c", "d"]]
    assert recall_vs_exact(found, exact, 2) == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert recall_vs_exact(found, exact, 3) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_training_needs_enough_vectors_and_valid_factories():
    x = clustered(100, 64)
    ids = [str(i) for i in range(100)]
    with pytest.raises(ConfigError, match="at least 256 vectors"):
        EmbtuneFaissIndex.build(x, ids, "IVF8,PQ16")
    with pytest.raises(ConfigError, match="divide the dimension 64"):
        EmbtuneFaissIndex.build(x, ids, "IVF4,PQ7")
    with pytest.raises(ConfigError, match="'NotAnIndex'"):
        EmbtuneFaissIndex.build(x, ids, "NotAnIndex")
    index = faiss.index_factory(64, "OPQ8,IVF32,PQ8", faiss.METRIC_INNER_PRODUCT)
    assert training_requirements(index) == (256, 39 * 256)
    assert training_requirements(faiss.index_factory(64, "HNSW32", faiss.METRIC_INNER_PRODUCT)) == (0, 0)
    ivf = EmbtuneFaissIndex.build(x, ids, "IVF4,Flat")
    assert ivf.index.is_trained and len(ivf) == 100 and ivf.search_params == "nprobe=4"


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF4,Flat"])
def test_save_load_round_trip_without_pickle(tmp_path, factory):
    x, q = clustered(300, 32, seed=5), clustered(5, 32, seed=6)
    ids = [f"doc-{i}" for i in range(300)]
    index = EmbtuneFaissIndex.build(x, ids, factory, model="some/model", truncate_dim=None)
    scores, ranked = index.search(q, 7)
    folder = index.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "index.json"]
    meta = json.loads((folder / "index.json").read_text())
    assert meta["ids"] == ids and meta["model"] == "some/model" and meta["factory"] == factory
    loaded = EmbtuneFaissIndex.load(folder)
    assert loaded.search_params == index.search_params
    scores2, ranked2 = loaded.search(q, 7)
    assert ranked2 == ranked
    np.testing.assert_allclose(scores2, scores, rtol=1e-6)
    assert all(row == sorted(row, reverse=True) for row in scores)
    meta["ids"] = ids[:-1]
    (folder / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="299 ids"):
        EmbtuneFaissIndex.load(folder)


def test_one_batched_add_and_incremental_add():
    x = clustered(50, 16)
    index = EmbtuneFaissIndex.build(x[:40], [str(i) for i in range(40)], "Flat")
    index.add(x[40:], [str(i) for i in range(40, 50)])
    assert len(index) == 50
    _, ranked = index.search(x[45:46], 1)
    assert ranked == [["45"]]
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[:1], ["3"])


def test_search_texts_uses_the_recorded_model(tmp_path, tiny_folder, eval_task):
    corpus = dict(list(eval_task.corpus.items())[:30])
    index = EmbtuneFaissIndex.from_corpus(tiny_folder, corpus, "HNSW32", truncate_dim=32)
    assert index.model == tiny_folder and index.dim == 32
    loaded = EmbtuneFaissIndex.load(index.save(tmp_path / "idx"))
    doc_ids = list(corpus)[:3]
    _, ranked = loaded.search_texts([corpus[d] for d in doc_ids], k=3)
    assert [r[0] for r in ranked] == doc_ids  # a document's own text finds it (no prompts on this model)


def test_bm25_and_reciprocal_rank_fusion():
    texts = ["the cat sat on the mat", "dogs bark at cats", "a treatise on quantum chromodynamics"]
    ranked = bm25_rankings(texts, ["a", "b", "c"], ["cat mat", "quantum", "unrelatedword"], k=3)
    assert ranked[0][0] == "a" and ranked[1] == ["c"] and ranked[2] == []
    fused = reciprocal_rank_fusion([["x", "y", "z"], ["y", "w"]], rrf_k=60)
    assert fused == ["y", "x", "w", "z"]  # y: 1/62 + 1/61, x: 1/61, w: 1/62, z: 1/63
    assert reciprocal_rank_fusion([["b"], ["a"]]) == ["a", "b"]  # equal scores: smaller id first
    from embtune.eval import hybrid

    assert reciprocal_rank_fusion is hybrid.reciprocal_rank_fusion  # one owner: the core's fusion


def test_hybrid_rows(tiny_st, eval_task):
    rows = evaluate(tiny_st, eval_task.corpus, eval_task.queries, eval_task.qrels, indexes="Flat",
                    dims=[64, 32], hybrid=True, ks=(10,), show_progress=False)
    assert [(r["dims"], r["method"]) for r in rows] == [(64, "dense"), (64, "hybrid"), (32, "dense"),
                                                        (32, "hybrid")]
    # A random tiny model ranks by noise; BM25 carries the hybrid rows on SciFact.
    assert rows[1]["ndcg@10"] > rows[0]["ndcg@10"] + 0.1
    assert rows[1]["recall_vs_exact@10"] == pytest.approx(1.0)


def test_eval_cli_json_and_table(tmp_path, tiny_folder):
    """``embtune-faiss eval`` (this package's own command): rows per index x dims x method; its Flat
    dense row equals the core ``embtune eval`` row (exact search) on the same folder."""
    from click.testing import CliRunner

    from embtune.cli import main as core_main
    from embtune_faiss.cli import main

    data = write_beir(tmp_path / "beir", scifact_slice(10, 40))
    runner = CliRunner()
    args = ["eval", tiny_folder, "--data", str(data), "--index", "Flat", "--index", "HNSW32",
            "--dims", "64,32", "--hybrid", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 8
    assert set(rows[0]) == {"index", "dims", "method", "ndcg@10", "recall@10", "mrr@10", "map@100",
                            "recall_vs_exact@10"}
    assert [(r["index"], r["dims"], r["method"]) for r in rows[:4]] == [
        ("Flat", 64, "dense"), ("Flat", 64, "hybrid"), ("HNSW32", 64, "dense"), ("HNSW32", 64, "hybrid")]
    core = runner.invoke(core_main, ["eval", tiny_folder, "--data", str(data), "--dims", "64,32", "--json"])
    assert core.exit_code == 0, core.output
    exact = {row["dims"]: row for row in json.loads(core.stdout)}
    for row in rows:
        if row["index"] == "Flat" and row["method"] == "dense":
            for key in ("ndcg@10", "recall@10", "mrr@10", "map@100"):
                assert row[key] == pytest.approx(exact[row["dims"]][key], abs=1e-5), (row["dims"], key)
    table = runner.invoke(main, ["eval", tiny_folder, "--data", str(data)])
    assert table.exit_code == 0, table.output
    assert "| Flat | 64 | dense |" in table.stdout
    bad = runner.invoke(main, ["eval", tiny_folder, "--data", str(data), "--dims", "64,999"])
    assert bad.exit_code == 2 and "dims must be integers in 1..64" in bad.output
    assert bad.output.startswith("embtune: error: ")
