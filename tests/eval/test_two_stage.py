"""embtune.eval.two_stage: the dense, hybrid and rerank rows, each checked against a ranking the test
builds itself (its own cosine ranking, BM25 + the fusion function, the reranker's own ``predict``)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from embtune.errors import ConfigError, EmbtuneError
from embtune.eval import dense_rankings, evaluate_retrieval, retrieval_metrics, two_stage_eval
from embtune.eval.bm25 import bm25_rankings
from embtune.eval.hybrid import hybrid_rankings, reciprocal_rank_fusion
from embtune.eval.two_stage import DENSE, HYBRID, rerank_method

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tiny_models import minilm_path  # noqa: E402

DOCS = {
    "d01": "Mitochondria produce most of the cell's ATP through oxidative phosphorylation.",
    "d02": "The Krebs cycle runs in the mitochondrial matrix and feeds electrons to the respiratory chain.",
    "d03": "Photosynthesis in chloroplasts turns light energy into chemical energy stored in glucose.",
    "d04": "Insulin lowers blood glucose by moving glucose transporters to the cell membrane.",
    "d05": "Type 2 diabetes begins with insulin resistance in muscle, liver and fat tissue.",
    "d06": "Regular aerobic exercise improves insulin sensitivity in adults with prediabetes.",
    "d07": "Coffee drinkers show no higher risk of heart disease in large cohort studies.",
    "d08": "Caffeine blocks adenosine receptors and raises alertness for several hours.",
    "d09": "Statins reduce LDL cholesterol and the risk of a second heart attack.",
    "d10": "The hippocampus is needed to form new long-term memories of events.",
    "d11": "Sleep deprivation impairs memory consolidation in the hippocampus.",
    "d12": "Vaccines train the adaptive immune system to recognise a pathogen before infection.",
}
QUERIES = {
    "q1": "how do cells make energy",
    "q2": "what causes diabetes and how is blood sugar controlled",
    "q3": "is coffee bad for the heart",
    "q4": "does lack of sleep hurt memory",
    "q5": "how do vaccines work",
}
QRELS = {
    "q1": {"d01": 2, "d02": 1, "d03": 0},
    "q2": {"d04": 1, "d05": 2, "d06": 1},
    "q3": {"d07": 2, "d08": 1},  # BM25 ranks d09 (heart) above d08: the hybrid row differs
    "q4": {"d11": 2, "d10": 1},
    "q5": {"d12": 0},  # no relevant document: left out of every row
}
QIDS = ["q1", "q2", "q3", "q4"]
KS = (1, 3, 10)
TOP = 4  # fewer than max(KS): the rerank rows keep the dense tail after the reranked head


class OracleReranker:
    """A reranker with a known score (the qrels grade of the pair) and a known cost (10 ms a call)."""

    def __init__(self):
        self.grade = {(QUERIES[q], DOCS[d]): s for q, docs in QRELS.items() for d, s in docs.items()}
        self.calls = 0

    def predict(self, pairs, **kwargs):
        self.calls += 1
        time.sleep(0.01)
        return np.array([float(self.grade.get(tuple(pair), 0)) for pair in pairs], dtype=np.float32)


@pytest.fixture(scope="module")
def embedder():
    from embtune.models.inference import load_inference_model

    return load_inference_model(minilm_path(), device="cpu")


@pytest.fixture(scope="module")
def cross_encoder(tiny_model):
    """A tiny random BERT with a fresh one-logit head: a real CrossEncoder that reorders at random."""
    from embtune.rerankers import load_reranker

    return load_reranker(tiny_model, for_inference=True, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def own_dense(embedder):
    """Each judged query's top 10 documents by cosine, computed here (numpy; ties to the smaller id)."""
    ids = sorted(DOCS)
    docs = np.asarray(embedder.encode_document([DOCS[d] for d in ids], normalize_embeddings=True))
    out = {}
    for q in QIDS:
        query = np.asarray(embedder.encode_query([QUERIES[q]], normalize_embeddings=True))[0]
        scores = docs @ query
        out[q] = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))][:10]
    return out


@pytest.fixture(scope="module")
def result(embedder, cross_encoder, tmp_path_factory):
    """One two-stage run: an in-memory CrossEncoder, the same one saved and passed as a folder, the oracle."""
    saved = tmp_path_factory.mktemp("reranker") / "tiny-ce"
    cross_encoder.save_pretrained(str(saved))
    oracle = OracleReranker()
    rerankers = {"tiny": cross_encoder, "saved": str(saved), "oracle": oracle}
    rows = two_stage_eval(embedder, rerankers, DOCS, QUERIES, QRELS, top=TOP, ks=KS, show_progress=False)
    return {row["method"]: row for row in rows}, [row["method"] for row in rows], oracle


def _same_metrics(row, expected):
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key


def test_rows_in_order_with_metrics_and_timings(result):
    rows, order, _ = result
    assert order == [DENSE, HYBRID, rerank_method("tiny"), rerank_method("saved"), rerank_method("oracle")]
    for row in rows.values():
        assert row["num_queries"] == 4 and row["num_queries_without_relevant"] == 1
        assert {"ndcg@10", "recall@10", "mrr@10", "map@10"} <= set(row)
        assert 0 < row["ms_per_query"] < 60_000
    assert rows[DENSE]["index_s"] > 0 and rows[HYBRID]["index_s"] >= rows[DENSE]["index_s"]


def test_dense_row_is_evaluate_retrieval(result, embedder, own_dense):
    rows, _, _ = result
    expected = evaluate_retrieval(embedder, DOCS, QUERIES, QRELS, ks=KS, show_progress=False)
    assert {k: rows[DENSE][k] for k in expected} == expected
    # and the shared first stage is the test's own cosine ranking
    assert dense_rankings(embedder, DOCS, QUERIES, QIDS, 10, show_progress=False) == own_dense
    assert expected == retrieval_metrics(own_dense, QRELS, KS)


def test_hybrid_row_is_the_fusion_of_bm25_and_dense(result, own_dense):
    rows, _, _ = result
    ids = list(DOCS)
    lexical = dict(zip(QIDS, bm25_rankings([DOCS[d] for d in ids], ids, [QUERIES[q] for q in QIDS], k=10)))
    fused = {q: reciprocal_rank_fusion([own_dense[q], lexical[q]], 10) for q in QIDS}
    assert fused == hybrid_rankings(own_dense, lexical, 10)
    expected = retrieval_metrics(fused, QRELS, KS)
    assert expected != retrieval_metrics(own_dense, QRELS, KS)  # BM25 changes the metrics: the check can fail
    _same_metrics(rows[HYBRID], expected)


def test_rerank_row_is_the_cross_encoders_own_order(result, cross_encoder, own_dense):
    rows, _, _ = result
    reranked = {}
    for q in QIDS:
        head = own_dense[q][:TOP]
        scores = cross_encoder.predict([(QUERIES[q], DOCS[d]) for d in head])
        reranked[q] = [head[i] for i in np.argsort(-np.asarray(scores), kind="stable")] + own_dense[q][TOP:]
    expected = retrieval_metrics(reranked, QRELS, KS)
    assert expected != retrieval_metrics(own_dense, QRELS, KS)  # the random head reorders: the check can fail
    _same_metrics(rows[rerank_method("tiny")], expected)
    _same_metrics(rows[rerank_method("saved")], expected)  # loaded from the folder: the same model


def test_oracle_reranker_puts_relevant_candidates_first_and_its_time_is_counted(result, own_dense):
    rows, _, oracle = result
    assert oracle.calls == len(QIDS)  # one predict per query (TOP pairs fit one batch)
    expected = {q: sorted(own_dense[q][:TOP], key=lambda d: -QRELS[q].get(d, 0)) + own_dense[q][TOP:]
                for q in QIDS}
    _same_metrics(rows[rerank_method("oracle")], retrieval_metrics(expected, QRELS, KS))
    assert rows[rerank_method("oracle")]["ndcg@3"] > rows[DENSE]["ndcg@3"]
    assert rows[rerank_method("oracle")]["ms_per_query"] >= 10  # the added 10 ms per query


def test_hybrid_rankings_fuses_per_query():
    fused = hybrid_rankings({"q": ["a", "b", "c"], "r": ["x"]}, {"q": ["c", "d"]}, k=3)
    # q: a 1/61, b 1/62, c 1/63 + 1/61, d 1/62 -> c, then b and d tie (1/62): smaller id first
    assert fused == {"q": ["c", "a", "b"], "r": ["x"]}
    assert hybrid_rankings({"q": ["a", "b"]}, {"q": ["b", "a"]}) == {"q": ["a", "b"]}


def test_options_and_errors(embedder):
    rows = two_stage_eval(embedder, None, DOCS, QUERIES, QRELS, top=2, ks=(1, 3), bm25=False,
                          show_progress=False)
    assert [row["method"] for row in rows] == [DENSE]
    with pytest.raises(ConfigError, match="top"):
        two_stage_eval(embedder, {}, DOCS, QUERIES, QRELS, top=0)
    with pytest.raises(ConfigError, match="CrossEncoder"):
        two_stage_eval(embedder, {"bad": 3}, DOCS, QUERIES, QRELS, top=2, ks=(1,), bm25=False,
                       show_progress=False)

    class NoEncode:
        def encode_query(self, *args, **kwargs):
            raise AssertionError("encoded although nothing can be evaluated")

    with pytest.raises(EmbtuneError, match="no query"):
        two_stage_eval(NoEncode(), {}, DOCS, QUERIES, {"q5": {"d12": 0}})


def test_ignore_identical_ids_matches_evaluate_retrieval(embedder):
    docs = {**DOCS, **{q: text for q, text in QUERIES.items()}}  # the queries are also documents
    rows = two_stage_eval(embedder, {}, docs, QUERIES, QRELS, ks=KS, top=3, show_progress=False,
                          ignore_identical_ids=True)
    expected = evaluate_retrieval(embedder, docs, QUERIES, QRELS, ks=KS, show_progress=False,
                                  ignore_identical_ids=True)
    assert {k: rows[0][k] for k in expected} == expected
    assert expected != evaluate_retrieval(embedder, docs, QUERIES, QRELS, ks=KS, show_progress=False)
