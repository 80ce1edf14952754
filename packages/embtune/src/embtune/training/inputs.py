"""Turn ``train``'s arguments into what the loop runs on: rows, loss module, evaluator, parameters.

Each function checks its input and raises a ConfigError / DataFormatError that says what to change,
so a bad argument fails before any tokenisation or training step.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from embtune.errors import ConfigError, DataFormatError
from embtune.training.config import TrainConfig

LABEL = "label"


@dataclass
class TrainingRows:
    """Training data in column form: ``text_rows[r][c]`` is row r's text in text column c."""

    text_columns: list[str]
    text_rows: list[tuple[str, ...]]
    labels: list[float] | None
    digest: str
    """sha256 of the columns and every row (texts and labels), for the checkpoint fingerprint."""


def load_rows(data: Any) -> TrainingRows:
    """Read ``data`` with ``embtune.data.as_pairs_data`` and split texts from labels.

    In: anything ``as_pairs_data`` accepts (a path, BeirData, datasets.Dataset, list of tuples or
    dicts, PairsData). Out: TrainingRows. Raises DataFormatError when there is no text column or no row.
    """
    from embtune.data import as_pairs_data

    pairs = as_pairs_data(data)
    text_columns = [c for c in pairs.columns if c != LABEL]
    if not text_columns:
        raise DataFormatError("training data has no text column")
    if not pairs.rows:
        raise DataFormatError("training data has no rows")
    sha = hashlib.sha256(json.dumps(list(pairs.columns)).encode())
    text_rows = []
    labels: list[float] | None = [] if LABEL in pairs.columns else None
    for row in pairs.rows:
        texts = tuple(row[c] for c in text_columns)
        text_rows.append(texts)
        if labels is not None:
            labels.append(row[LABEL])
        sha.update(json.dumps([texts, row.get(LABEL)], ensure_ascii=False).encode())
    return TrainingRows(text_columns, text_rows, labels, sha.hexdigest())


def resolve_loss(loss: Any, model: nn.Module, config: TrainConfig) -> tuple[nn.Module, str]:
    """Build the loss module; returns ``(module, name)``.

    ``loss`` is a name for ``embtune.losses.get_loss`` (given ``config.matryoshka_dims`` and
    ``config.loss_kwargs``), an ``nn.Module`` built on ``model``, or a callable ``f(model, **loss_kwargs)``
    returning one (e.g. a loss class). ConfigError when the pieces do not fit together.
    """
    from embtune.rerankers.loading import is_reranker

    if isinstance(loss, str) and is_reranker(model):
        from embtune.rerankers.losses import get_reranker_loss, reranker_loss_key

        if config.matryoshka_dims:
            raise ConfigError("matryoshka_dims applies to embedding models, not rerankers")
        module, name = get_reranker_loss(loss, model, **config.loss_kwargs), reranker_loss_key(loss)
    elif isinstance(loss, str):
        from embtune.losses import get_loss

        module = get_loss(loss, model, matryoshka_dims=config.matryoshka_dims, **config.loss_kwargs)
        name = loss
    elif isinstance(loss, nn.Module):
        if config.loss_kwargs or config.matryoshka_dims:
            raise ConfigError("loss_kwargs and matryoshka_dims apply only when loss is a name or a "
                              "callable; this loss module is already built")
        module, name = loss, type(loss).__qualname__
    elif callable(loss):
        if config.matryoshka_dims:
            raise ConfigError("matryoshka_dims applies only when loss is a name; wrap your loss "
                              "in embtune.losses.MatryoshkaLoss instead")
        module = loss(model, **config.loss_kwargs)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"the loss callable returned {type(module).__name__}, not an nn.Module")
        name = type(module).__qualname__
    else:
        raise ConfigError(f"loss must be a loss name, an nn.Module or a callable, got {type(loss).__name__}")
    if getattr(module, "model", model) is not model:
        raise ConfigError("the loss was built for another model object; build it on the model you train")
    return module, name


def check_labels(loss: nn.Module, loss_name: str, rows: TrainingRows) -> None:
    """ConfigError when the loss needs labels the data lacks, or the data's labels would be ignored.

    Only losses that declare ``needs_labels`` (all of embtune's) are checked.
    """
    needs = getattr(loss, "needs_labels", None)
    if needs is None:
        return
    if needs and rows.labels is None:
        raise ConfigError(f"loss {loss_name!r} needs a 'label' column; the data has columns "
                          f"{', '.join(rows.text_columns)}")
    if not needs and rows.labels is not None:
        raise ConfigError(f"the data has a 'label' column but loss {loss_name!r} ignores labels (every "
                          "pair would count as a positive); use 'cosent' or 'cosine_mse', or drop the labels")


def trainable_parameters(model: nn.Module, loss: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters to optimise, by name: the model's with ``requires_grad``, then any the loss owns
    (named ``loss.<name>``). ConfigError when there are none."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    model_ids = {id(p) for p in model.parameters()}
    for name, p in loss.named_parameters():
        if p.requires_grad and id(p) not in model_ids:
            params[f"loss.{name}"] = p
    if not params:
        raise ConfigError("nothing to train: no parameter of the model requires grad (attach a LoRA "
                          "adapter or unfreeze the model)")
    return params


def build_optimizer(params: Mapping[str, nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``params``; matrices get ``config.weight_decay``, vectors (biases, norms) none."""
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)


def resolve_eval(eval_data: Any, config: TrainConfig) -> Callable[[nn.Module], dict[str, float]] | None:
    """A function ``model -> metrics`` for ``eval_data``, or None when it is None.

    ``eval_data``: a BEIR folder path or BeirData (qrels of ``config.eval_split``); an object with
    ``corpus``/``queries``/``qrels``; a tuple ``(corpus, queries, qrels)``; or a callable
    ``model -> dict`` (e.g. a sentence-transformers evaluator). Retrieval data is scored with
    ``embtune.eval.evaluate_retrieval``.
    """
    if eval_data is None:
        return None
    if isinstance(eval_data, (str, os.PathLike)):
        from embtune.data import load_beir

        eval_data = load_beir(eval_data)
    if hasattr(eval_data, "split_qrels"):
        corpus, queries, qrels = eval_data.corpus, eval_data.queries, eval_data.split_qrels(config.eval_split)
    elif all(hasattr(eval_data, a) for a in ("corpus", "queries", "qrels")):
        corpus, queries, qrels = eval_data.corpus, eval_data.queries, eval_data.qrels
    elif isinstance(eval_data, (tuple, list)) and len(eval_data) == 3:
        corpus, queries, qrels = eval_data
    elif callable(eval_data):
        return lambda model: {k: float(v) for k, v in dict(eval_data(model)).items()}
    else:
        raise ConfigError("eval_data must be a BEIR folder, an object with corpus/queries/qrels, a tuple "
                          "(corpus, queries, qrels) or a callable model -> metrics; "
                          f"got {type(eval_data).__name__}")
    from embtune.eval import evaluate_retrieval

    def evaluate(model: nn.Module) -> dict[str, float]:
        metrics = evaluate_retrieval(model, corpus, queries, qrels, batch_size=config.eval_batch_size,
                                     show_progress=False)
        return {k: float(v) for k, v in metrics.items()}

    return evaluate


def model_identity(model: nn.Module) -> dict[str, Any]:
    """Name (last path component of the backbone's name or folder, so a run folder may move) and
    class of the model's backbone, for the fingerprint."""
    first = next(iter(model.children()), model)
    backbone = getattr(first, "auto_model", None) or first
    name = str(getattr(getattr(backbone, "config", None), "_name_or_path", "") or "")
    return {"name": name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or None,
            "class": type(backbone).__name__}
