"""The seeds' other metrics: clustering, classification and pair similarity of frozen embeddings.

Each task reads a JSONL file, embeds its texts with the model and scores the embeddings with
scikit-learn / scipy, never with a metric of its own:

* ``clustering`` (rows ``{"text", "label"}``): k-means (``sklearn.cluster.KMeans``, as many clusters as
  distinct labels, ``n_init=10``, ``random_state=seed``) on the L2-normalised embeddings, scored
  against the labels with NMI, adjusted Rand and V-measure; plus the cosine silhouette of the TRUE
  labels (how well the embedding space separates the given classes, independent of k-means' luck).
* ``classification`` (rows ``{"text", "label"}``): logistic regression on the frozen embeddings,
  predictions by stratified k-fold cross-validation (``cross_val_predict``, shuffled with ``seed``);
  accuracy and macro precision / recall / F1 of those out-of-fold predictions.
* ``pair-similarity`` (rows ``{"text1", "text2", "score"}``): the cosine of each pair's embeddings
  against the gold scores, Spearman and Pearson (``scipy.stats``).

Texts are embedded with ``embtune.models.inference.encode_texts`` as documents (the model's document
prompt applies, none for MiniLM), L2-normalised in float32. Labels may be JSON strings or integers and
are compared as strings (``1`` and ``"1"`` are the same class). Bad files raise DataFormatError naming
the file and line. sklearn, scipy and torch load on first use, so the command line can check a file
before they do.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from embtune.data._io import iter_jsonl
from embtune.errors import ConfigError, DataFormatError

TASKS = ("clustering", "classification", "pair-similarity")
METRICS = {
    "clustering": ("nmi", "ari", "v_measure", "silhouette"),
    "classification": ("accuracy", "precision_macro", "recall_macro", "f1_macro"),
    "pair-similarity": ("spearman", "pearson"),
}
"""The metric keys of each task, in table order (every task's result also holds ``num_texts`` or
``num_pairs`` and, for the labelled tasks, ``num_labels``)."""
FIELDS = {"clustering": ("text", "label"), "classification": ("text", "label"),
          "pair-similarity": ("text1", "text2", "score")}
FOLDS = 5
SEED = 0


@dataclass
class TaskData:
    """The validated rows of one task file: ``texts`` and ``labels`` (labelled tasks) or ``texts``,
    ``texts2`` and ``scores`` (pair similarity), in file order; ``source`` is the file."""

    task: str
    source: str
    texts: list[str]
    labels: list[str] = field(default_factory=list)
    texts2: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of rows (texts or pairs)."""
        return len(self.texts)


def check_task(task: str) -> str:
    """In: a task name. Out: the same name; ConfigError listing the tasks when it is not one of ``TASKS``."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return task


def _text(row: dict[str, Any], key: str, path: os.PathLike | str, line: int) -> str:
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f'"{key}" must be a non-blank string, got {value!r}', path=path, line=line)
    return value


def read_task_data(task: str, path: str | os.PathLike, folds: int = FOLDS) -> TaskData:
    """Read and check the JSONL file of ``task`` (one of ``TASKS``).

    In: the task, the file path and, for classification, the number of cross-validation folds (every
    class needs at least that many rows). Out: a `TaskData`. Every non-blank line must be a JSON object
    with exactly the task's keys (``FIELDS``): non-blank string texts, a string or integer ``label``, a
    finite number ``score``. DataFormatError naming the file and line for a bad row (missing or extra
    key, wrong type, bad JSON, non-UTF-8), naming the file for a file that is missing or empty or that
    cannot be scored: fewer than 2 labels, no more rows than labels (clustering), a class smaller than
    ``folds`` (classification), fewer than 2 pairs or gold scores all equal (pair similarity).
    """
    check_task(task)
    keys = FIELDS[task]
    data = TaskData(task=task, source=os.fspath(path), texts=[])
    for line, row in iter_jsonl(path):
        if set(row) != set(keys):
            missing = [k for k in keys if k not in row]
            extra = sorted(k for k in row if k not in keys)
            what = f"missing {missing}" if missing else f"unexpected {extra}"
            raise DataFormatError(f"a {task} row has the keys {list(keys)}: {what}", path=path, line=line)
        if task == "pair-similarity":
            data.texts.append(_text(row, "text1", path, line))
            data.texts2.append(_text(row, "text2", path, line))
            score = row["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise DataFormatError(f'"score" must be a finite number, got {score!r}', path=path, line=line)
            data.scores.append(float(score))
        else:
            data.texts.append(_text(row, "text", path, line))
            label = row["label"]
            if isinstance(label, bool) or not isinstance(label, (str, int)) or str(label).strip() == "":
                raise DataFormatError(f'"label" must be a non-blank string or an integer, got {label!r}',
                                      path=path, line=line)
            data.labels.append(str(label))
    _check_scorable(data, folds)
    return data


def _check_scorable(data: TaskData, folds: int) -> None:
    """DataFormatError naming the file when its rows cannot give the task's metrics."""
    if data.task == "pair-similarity":
        if len(data) < 2:
            raise DataFormatError("pair similarity needs at least 2 pairs", path=data.source)
        if len(set(data.scores)) < 2:
            raise DataFormatError("the gold scores are all equal: no correlation to measure", path=data.source)
        return
    counts: dict[str, int] = {}
    for label in data.labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise DataFormatError(f"{data.task} needs at least 2 distinct labels, found {len(counts)}", path=data.source)
    if data.task == "clustering" and len(data) <= len(counts):
        raise DataFormatError("clustering needs more texts than labels (the silhouette is undefined otherwise)",
                              path=data.source)
    if data.task == "classification":
        small = sorted((n, label) for label, n in counts.items() if n < folds)
        if small:
            raise DataFormatError(f"label {small[0][1]!r} has {small[0][0]} texts; {folds}-fold classification "
                                  f"needs at least {folds} per label", path=data.source)


def _check_rows(embeddings: Any, n: int, what: str = "labels") -> np.ndarray:
    """``embeddings`` as a 2-D float array with ``n`` rows (float dtype kept, so sklearn sees what a caller
    would pass it; anything else as float64); ValueError otherwise."""
    emb = np.asarray(embeddings)
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be 2-D with one row per {what[:-1]} ({n}), got shape {emb.shape}")
    return emb


def clustering_metrics(embeddings: Any, labels: Sequence[Any], seed: int = SEED) -> dict[str, float]:
    """Cluster ``embeddings`` [n, d] with k-means and score the clusters against ``labels`` (n gold labels).

    The rows are L2-normalised (``sklearn.preprocessing.normalize``), then clustered by
    ``KMeans(n_clusters=<distinct labels>, n_init=10, random_state=seed)``. Out: ``nmi``
    (normalized_mutual_info_score), ``ari`` (adjusted_rand_score), ``v_measure`` (v_measure_score) of
    the k-means labels vs ``labels``; ``silhouette``: ``silhouette_score(..., metric="cosine")`` of the
    TRUE labels (how well the space separates the given classes, whatever k-means found); and
    ``num_texts``, ``num_labels``. ValueError for shapes that disagree, fewer than 2 labels or no
    more rows than labels.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import (adjusted_rand_score, normalized_mutual_info_score, silhouette_score,
                                 v_measure_score)
    from sklearn.preprocessing import normalize

    gold = np.asarray([str(label) for label in labels])
    emb = normalize(_check_rows(embeddings, len(gold)))
    k = len(set(gold.tolist()))
    if not 2 <= k < len(gold):
        raise ValueError(f"clustering needs 2 <= distinct labels < rows, got {k} labels for {len(gold)} rows")
    found = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
    return {"nmi": float(normalized_mutual_info_score(gold, found)),
            "ari": float(adjusted_rand_score(gold, found)),
            "v_measure": float(v_measure_score(gold, found)),
            "silhouette": float(silhouette_score(emb, gold, metric="cosine")),
            "num_texts": len(gold), "num_labels": k}


def classification_metrics(embeddings: Any, labels: Sequence[Any], folds: int = FOLDS,
                           seed: int = SEED) -> dict[str, float]:
    """Cross-validated logistic regression on frozen ``embeddings`` [n, d] with gold ``labels`` (n).

    Predictions come from ``cross_val_predict(LogisticRegression(max_iter=2000, random_state=seed), ...,
    cv=StratifiedKFold(folds, shuffle=True, random_state=seed))``: every row is predicted by a model
    that never saw it. The embeddings are used as given (no scaling). Out: ``accuracy`` and
    ``precision_macro`` / ``recall_macro`` / ``f1_macro`` (``precision_recall_fscore_support``,
    ``average="macro"``, ``zero_division=0``) of those predictions, ``num_texts``, ``num_labels``.
    ValueError for disagreeing shapes, fewer than 2 labels or a label with fewer than ``folds`` rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    gold = np.asarray([str(label) for label in labels])
    emb = _check_rows(embeddings, len(gold))
    classes, counts = np.unique(gold, return_counts=True)
    if len(classes) < 2 or counts.min() < folds:
        raise ValueError(f"classification needs >= 2 labels with >= {folds} rows each, got counts "
                         f"{dict(zip(classes.tolist(), counts.tolist()))}")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(LogisticRegression(max_iter=2000, random_state=seed), emb, gold, cv=cv)
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(gold, predicted)), "precision_macro": float(precision),
            "recall_macro": float(recall), "f1_macro": float(f1),
            "num_texts": len(gold), "num_labels": len(classes)}


def pair_similarity_metrics(emb_a: Any, emb_b: Any, scores: Sequence[float]) -> dict[str, float]:
    """Correlate the cosine similarity of each pair with its gold score.

    In: ``emb_a`` and ``emb_b`` [n, d] (row i of each is pair i; any norm, the cosine divides it out)
    and ``scores`` (n gold scores). Out: ``spearman`` (``scipy.stats.spearmanr``) and ``pearson``
    (``scipy.stats.pearsonr``) of the cosines vs the scores, and ``num_pairs``. ValueError for
    disagreeing shapes, fewer than 2 pairs, constant scores, or a zero-length embedding.
    """
    from scipy.stats import pearsonr, spearmanr

    gold = np.asarray(scores, dtype=np.float64)
    a = _check_rows(emb_a, len(gold), "pairs")
    b = _check_rows(emb_b, len(gold), "pairs")
    if a.shape != b.shape:
        raise ValueError(f"emb_a and emb_b differ in shape: {a.shape} vs {b.shape}")
    if len(gold) < 2 or np.all(gold == gold[0]):
        raise ValueError("pair similarity needs at least 2 pairs with gold scores that are not all equal")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if np.any(norms == 0):
        raise ValueError("an embedding has length 0: its cosine is undefined")
    cosine = np.einsum("ij,ij->i", a, b) / norms
    return {"spearman": float(spearmanr(cosine, gold).statistic), "pearson": float(pearsonr(cosine, gold).statistic),
            "num_pairs": len(gold)}


def embed(model: Any, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """In: a SentenceTransformer-like model and texts. Out: float32 [len(texts), dim], unit rows: each
    distinct text encoded once as a document by ``encode_texts`` (the package's one encoder)."""
    from embtune.models.inference import encode_texts

    unique = list(dict.fromkeys(texts))
    emb = encode_texts(model, unique, "document", batch_size=batch_size, normalize=True,
                       show_progress=show_progress)
    where = {text: i for i, text in enumerate(unique)}
    return emb[[where[text] for text in texts]]


def evaluate_task(model: Any, task: str, path: str | os.PathLike | TaskData, batch_size: int = 64,
                  folds: int = FOLDS, seed: int = SEED, show_progress: bool = False) -> dict[str, float]:
    """The metrics of ``model`` on one task file.

    In: ``model`` (anything ``load_inference_model`` takes: a SentenceTransformer, a folder, a hub id or
    None for the embedded MiniLM), ``task`` (one of ``TASKS``), ``path`` (the task's JSONL file, or its
    `TaskData` already read with ``read_task_data``), the encoding batch size, the classification folds
    and the seed of k-means and of the fold split. Out: the dict of ``clustering_metrics``,
    ``classification_metrics`` or ``pair_similarity_metrics`` on the embeddings of ``embed``.
    ConfigError for an unknown task; DataFormatError from ``read_task_data``.
    """
    from embtune.models.inference import load_inference_model

    data = path if isinstance(path, TaskData) else read_task_data(task, path, folds=folds)
    if data.task != check_task(task):
        raise ConfigError(f"{data.source} was read as {data.task} data, not {task}")
    st = load_inference_model(model)
    if task == "pair-similarity":
        both = embed(st, [*data.texts, *data.texts2], batch_size, show_progress)
        return pair_similarity_metrics(both[: len(data)], both[len(data):], data.scores)
    emb = embed(st, data.texts, batch_size, show_progress)
    if task == "clustering":
        return clustering_metrics(emb, data.labels, seed=seed)
    return classification_metrics(emb, data.labels, folds=folds, seed=seed)
