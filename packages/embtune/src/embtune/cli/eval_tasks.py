"""``embtune eval [MODEL] --task clustering|classification|pair-similarity --task-data FILE.jsonl
[--base BASE]``: the seeds' other metrics, base and tuned side by side.

The work is `embtune.eval.tasks` (k-means / logistic regression / cosine correlations with
scikit-learn and scipy). One table: a row per model (``base`` first when ``--base`` is given, then
``tuned``, MODEL; a single ``model`` row without ``--base``) and a column per metric of the task.
``--json`` prints ONE JSON list of rows ``{"model": "base"|"tuned"|"model", "name", "task",
<metrics>, "num_texts"|"num_pairs"[, "num_labels"]}``.
"""
from __future__ import annotations

import json

import click

from embtune.errors import ConfigError


def check_modes(data_dir, task, task_data, base, dims=None) -> None:
    """In: the ``eval`` options. ConfigError (one line) unless exactly one of ``--data`` (retrieval) and
    ``--task`` is given, with ``--task-data`` exactly when ``--task`` is, ``--base`` only with ``--task``
    and ``--dims`` only without it."""
    if not task and (task_data or base):
        raise ConfigError(f"{'--task-data' if task_data else '--base'} needs --task")
    if not data_dir and not task:
        raise ConfigError("give --data BEIR_DIR (retrieval) or --task TASK --task-data FILE.jsonl")
    if data_dir and task:
        raise ConfigError("--data (retrieval) and --task evaluate different things: give one of them")
    if task and not task_data:
        raise ConfigError(f"--task {task} needs --task-data FILE.jsonl")
    if task and dims:
        raise ConfigError("--dims applies to retrieval (--data), not to --task")


def _name(model) -> str:
    """How a model is named in the table: as given, or the embedded default's name."""
    from embtune.models.names import DEFAULT_MODEL

    return DEFAULT_MODEL if model in (None, "", "default") else str(model)


def run_task_eval(model, base, task, task_data, batch_size, max_seq_length, as_json) -> None:
    """Evaluate ``model`` (and ``base`` when given) on the ``task`` file ``task_data``; print the table
    (or JSON with ``as_json``). The file is read and checked before any model loads; a bad row is a
    DataFormatError naming file and line (one line from the CLI, exit 2)."""
    from embtune.eval.tasks import METRICS, check_task, read_task_data

    check_task(task)
    data = read_task_data(task, task_data)
    from embtune.eval.tasks import evaluate_task
    from embtune.models.inference import load_inference_model

    models = [("base", base), ("tuned", model)] if base is not None else [("model", model)]
    rows = []
    for role, name in models:
        st = load_inference_model(name, max_seq_length=max_seq_length)
        metrics = evaluate_task(st, task, data, batch_size=batch_size, show_progress=not as_json)
        rows.append({"model": role, "name": _name(name), "task": task, **metrics})
        del st
    if as_json:
        click.echo(json.dumps(rows))
        return
    from embtune.tables import markdown_table

    keys = METRICS[task]
    count = "num_pairs" if task == "pair-similarity" else "num_texts"
    click.echo(markdown_table(["model", "name", *keys, count],
                              [[row["model"], row["name"], *(f"{row[k]:.4f}" for k in keys), str(row[count])]
                               for row in rows]))
