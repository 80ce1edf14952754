"""embtune.eval.tasks and `embtune eval --task`: every metric is scikit-learn's / scipy's, called here
directly on the same embeddings; the reader names file and line; the CLI prints base and tuned rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import invoke, one_line_error
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (accuracy_score, adjusted_rand_score, f1_score, normalized_mutual_info_score,
                             precision_score, recall_score, silhouette_score, v_measure_score)
from sklearn.metrics.pairwise import paired_cosine_distances
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from tiny_models import minilm_path

from embtune.errors import ConfigError, DataFormatError
from embtune.eval.tasks import (classification_metrics, clustering_metrics, evaluate_task,
                                pair_similarity_metrics, read_task_data)

TOPICS = {
    "pets": ["a cat sleeps on the sofa", "kittens play with yarn", "my dog barks at the mailman",
             "the puppy chewed a shoe", "feeding the hamster twice a day", "the vet checked our rabbit"],
    "money": ["the stock market fell today", "interest rates rose again", "my savings account pays little",
              "the bank raised mortgage costs", "inflation hit a new high", "she bought shares in a startup"],
    "weather": ["heavy rain is expected tomorrow", "a storm hit the coast", "the forecast says snow",
                "sunny skies all week", "the wind knocked over our fence", "fog covered the valley"],
    "cooking": ["simmer the sauce for ten minutes", "bake the bread until golden", "chop the onions finely",
                "the soup needs more salt", "whisk the eggs with sugar", "grill the fish on high heat"],
}
PAIRS = [("a cat sleeps on the sofa", "a kitten naps on the couch", 4.8),
         ("a cat sleeps on the sofa", "the stock market fell", 0.1),
         ("heavy rain tomorrow", "a storm is expected", 3.6),
         ("interest rates rose", "the fog covered the valley", 0.3),
         ("bake the bread", "the bread is in the oven", 3.9),
         ("my dog barks", "the puppy is loud", 3.2),
         ("inflation hit a new high", "prices keep rising", 4.1),
         ("chop the onions", "the wind knocked over the fence", 0.0)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def labelled_rows():
    return [{"text": text, "label": label} for label, texts in TOPICS.items() for text in texts]


def pair_rows():
    return [{"text1": a, "text2": b, "score": s} for a, b, s in PAIRS]


def blobs(seed=0, sizes=(10, 10, 10), dim=8, spread=1.3):
    """Overlapping Gaussian blobs of ``sizes`` rows: k-means and the classifier get some rows wrong, so the
    metrics are not all 1.0 and a different setting (seed, folds, silhouette labels, averaging over
    unequal classes) would change them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    emb = np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
    labels = [f"c{i}" for i, n in enumerate(sizes) for _ in range(n)]
    return emb.astype(np.float32), labels


def sklearn_clustering(emb, labels, seed=0):
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    found = KMeans(n_clusters=len(set(labels)), n_init=10, random_state=seed).fit_predict(x)
    return {"nmi": normalized_mutual_info_score(labels, found), "ari": adjusted_rand_score(labels, found),
            "v_measure": v_measure_score(labels, found),
            "silhouette": silhouette_score(x, labels, metric="cosine")}


def _truth_and_oof(emb, labels, folds=5, seed=0):
    """The labels and the out-of-fold predictions of sklearn's own cross-validated logistic regression."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return labels, cross_val_predict(LogisticRegression(max_iter=2000, random_state=seed), emb, labels, cv=cv)


def sklearn_classification(emb, labels, folds=5, seed=0):
    _, pred = _truth_and_oof(emb, labels, folds, seed)
    return {"accuracy": accuracy_score(labels, pred),
            "precision_macro": precision_score(labels, pred, average="macro", zero_division=0),
            "recall_macro": recall_score(labels, pred, average="macro", zero_division=0),
            "f1_macro": f1_score(labels, pred, average="macro", zero_division=0)}


def scipy_pairs(a, b, scores):
    cosine = 1 - paired_cosine_distances(a, b)
    return {"spearman": spearmanr(cosine, scores).statistic, "pearson": pearsonr(cosine, scores).statistic}


def assert_metrics(got, expected, abs_tol=1e-9):
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=abs_tol), key


@pytest.fixture(scope="module")
def minilm_st():
    from embtune.models.inference import load_inference_model

    return load_inference_model(minilm_path(), device="cpu", dtype="fp32")


# ---------------------------------------------------------------- the metrics are sklearn's / scipy's


def test_clustering_metrics_are_sklearns():
    emb, labels = blobs()
    got = clustering_metrics(emb, labels, seed=0)
    expected = sklearn_clustering(emb, labels, seed=0)
    assert_metrics(got, expected)
    assert (got["num_texts"], got["num_labels"]) == (30, 3)
    assert 0 < got["nmi"] < 1 and 0 < got["ari"] < 1  # not a trivially perfect clustering
    # control: the silhouette of the k-means labels is a different number, so the test tells them apart
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    kmeans_labels = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(x)
    assert silhouette_score(x, kmeans_labels, metric="cosine") != pytest.approx(got["silhouette"], abs=1e-3)
    # the rows are normalised first: scaling one row changes nothing
    scaled = emb.copy()
    scaled[0] *= 7
    assert_metrics(clustering_metrics(scaled, labels, seed=0), expected)


def test_classification_metrics_are_sklearns():
    emb, labels = blobs(seed=1, sizes=(16, 10, 6), spread=1.6)
    got = classification_metrics(emb, labels, folds=5, seed=0)
    assert_metrics(got, sklearn_classification(emb, labels, folds=5, seed=0))
    assert 0.4 < got["accuracy"] < 1  # some rows are misclassified: the folds and seed matter
    # control: unequal classes, so macro averages differ from support-weighted ones
    assert got["f1_macro"] != pytest.approx(f1_score(*_truth_and_oof(emb, labels), average="weighted"), abs=1e-3)
    assert_metrics(classification_metrics(emb, labels, folds=3, seed=2), sklearn_classification(emb, labels, 3, 2))
    with pytest.raises(ValueError, match="5 rows"):
        classification_metrics(emb[:18], labels[:18])  # c0 x16, c1 x2


def test_pair_similarity_metrics_are_scipys():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    scores = rng.uniform(0, 5, size=12)
    got = pair_similarity_metrics(a, b, scores)
    assert_metrics(got, scipy_pairs(a, b, scores))
    assert got["num_pairs"] == 12
    with pytest.raises(ValueError):
        pair_similarity_metrics(a, b, np.ones(12))
    with pytest.raises(ValueError):
        pair_similarity_metrics(a, b[:5], scores)


# ---------------------------------------------------------------- end to end on MiniLM's embeddings


def test_evaluate_task_on_minilm_equals_sklearn_and_scipy(tmp_path, minilm_st):
    labelled = write_jsonl(tmp_path / "labelled.jsonl", labelled_rows())
    texts = [row["text"] for row in labelled_rows()]
    labels = [row["label"] for row in labelled_rows()]
    emb = minilm_st.encode_document(texts, convert_to_numpy=True, normalize_embeddings=True)
    got = evaluate_task(minilm_st, "clustering", labelled)
    assert_metrics(got, sklearn_clustering(emb, labels), abs_tol=1e-5)
    assert got["num_texts"] == 24 and got["num_labels"] == 4
    got = evaluate_task(minilm_st, "classification", labelled, folds=3)
    assert_metrics(got, sklearn_classification(emb, labels, folds=3), abs_tol=1e-5)

    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    a = minilm_st.encode_document([p[0] for p in PAIRS], convert_to_numpy=True, normalize_embeddings=True)
    b = minilm_st.encode_document([p[1] for p in PAIRS], convert_to_numpy=True, normalize_embeddings=True)
    got = evaluate_task(minilm_st, "pair-similarity", pairs)
    assert_metrics(got, scipy_pairs(a, b, [p[2] for p in PAIRS]), abs_tol=1e-5)
    assert got["spearman"] > 0.5  # MiniLM ranks the pairs roughly as the gold does
    with pytest.raises(ConfigError, match="unknown task"):
        evaluate_task(minilm_st, "retrieval", pairs)


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("task, lines, message", [
    ("clustering", ['{"text": "a", "label": "x"}', '{"text": "b", "label": "y"', ], ":2: invalid JSON"),
    ("clustering", ['{"text": "a", "label": "x"}', '{"text": "b"}'], ":2: a clustering row has the keys"),
    ("clustering", ['{"text": "a", "label": "x", "id": 3}'], ":1: a clustering row has the keys"),
    ("classification", ['{"text": " ", "label": "x"}'], ':1: "text" must be a non-blank string'),
    ("classification", ['{"text": "a", "label": true}'], ':1: "label" must be'),
    ("classification", ['{"text": "a", "label": 1.5}'], ':1: "label" must be'),
    ("pair-similarity", ['{"text1": "a", "text2": "b", "score": 1}', '',
                         '{"text1": "a", "text2": "c", "score": NaN}'], ':3: "score" must be a finite number'),
    ("pair-similarity", ['{"text1": "a", "text2": "b", "score": "high"}'], ':1: "score" must be'),
    ("pair-similarity", ['["a", "b", 1]'], ":1: expected a JSON object"),
])
def test_bad_rows_name_file_and_line(tmp_path, task, lines, message):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        read_task_data(task, path)
    assert str(err.value).startswith(str(path) + message), str(err.value)


def test_files_that_cannot_be_scored(tmp_path):
    one_label = write_jsonl(tmp_path / "one.jsonl", [{"text": f"t{i}", "label": "x"} for i in range(6)])
    with pytest.raises(DataFormatError, match="at least 2 distinct labels"):
        read_task_data("clustering", one_label)
    rows = labelled_rows()[:8]  # pets x6, money x2
    small = write_jsonl(tmp_path / "small.jsonl", rows)
    with pytest.raises(DataFormatError, match="'money' has 2 texts"):
        read_task_data("classification", small)
    assert len(read_task_data("classification", small, folds=2)) == 8
    flat = write_jsonl(tmp_path / "flat.jsonl", [{**row, "score": 1.0} for row in pair_rows()])
    with pytest.raises(DataFormatError, match="all equal"):
        read_task_data("pair-similarity", flat)
    with pytest.raises(DataFormatError, match="does not exist"):
        read_task_data("clustering", tmp_path / "missing.jsonl")
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(4)]
                        + [{"text": "t9", "label": "1"}])
    assert read_task_data("clustering", mixed).labels == ["0", "1", "0", "1", "1"]


# ---------------------------------------------------------------- the command line


def test_cli_prints_base_and_tuned_rows(tmp_path, tiny_model):
    from embtune.models.inference import load_inference_model

    labelled = write_jsonl(tmp_path / "labelled.jsonl", labelled_rows())
    result = invoke("eval", minilm_path(), "--base", tiny_model, "--task", "clustering", "--task-data", labelled)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "| model | name | nmi | ari | v_measure | silhouette | num_texts |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| base", "| tuned"]
    assert f"| base | {tiny_model} |" in lines[2] and f"| tuned | {minilm_path()} |" in lines[3]

    result = invoke("eval", minilm_path(), "--base", tiny_model, "--task", "classification",
                    "--task-data", labelled, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(row["model"], row["name"], row["task"]) for row in rows] == [
        ("base", tiny_model, "classification"), ("tuned", minilm_path(), "classification")]
    for row, path in zip(rows, (tiny_model, minilm_path())):
        expected = evaluate_task(load_inference_model(path), "classification", labelled)
        assert_metrics(row, {k: v for k, v in expected.items()}, abs_tol=1e-6)
    assert rows[0]["accuracy"] != rows[1]["accuracy"]  # two different models, two different rows

    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    result = invoke("eval", tiny_model, "--task", "pair-similarity", "--task-data", pairs)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "| model | name | spearman | pearson | num_pairs |" and len(lines) == 3
    assert lines[2].startswith(f"| model | {tiny_model} |") and lines[2].endswith("| 8 |")


def test_cli_bad_line_is_one_line_error(tmp_path, tiny_model):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    line = one_line_error("eval", tiny_model, "--task", "clustering", "--task-data", path)
    assert f"{path}:2: invalid JSON" in line
    assert "Traceback" not in line


@pytest.mark.parametrize("args, message", [
    ((), "give --data BEIR_DIR (retrieval) or --task"),
    (("--task", "clustering"), "--task clustering needs --task-data"),
    (("--task-data", "x.jsonl"), "--task-data needs --task"),
    (("--data", "beir", "--base", "m"), "--base needs --task"),
    (("--data", "beir", "--task", "clustering", "--task-data", "x.jsonl"), "give one of them"),
    (("--task", "clustering", "--task-data", "x.jsonl", "--dims", "8"), "--dims applies to retrieval"),
])
def test_cli_option_combinations(args, message):
    assert message in one_line_error("eval", *args)


def test_cli_unknown_task_is_a_usage_error():
    assert "'retrieval' is not one of" in one_line_error("eval", "--task", "retrieval", "--task-data", "x.jsonl")
