"""Shared by the three task examples: base MiniLM vs a tuned model folder on one `embtune eval --task` task.

The tuned model is a required argument (comparing the base with itself would show nothing). Any folder
`embtune eval` loads will do: an `embtune train` / `embtune from-corpus` run's ``merged`` folder, a LoRA
adapter folder, or a hub id already in the local cache. To make one on this machine in a few minutes:

    embtune from-corpus examples/sample_corpus --out runs/sqlite --no-select-strength --batch-size 16 --lr 1e-3
    python examples/tasks/clustering.py runs/sqlite/merged

The task files are built on first use into ``--data`` (default ``runs/task-data``) by
``examples/tasks/build_task_data.py``, from files already on disk.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "runs" / "task-data"
FILES = {"clustering": "clustering.jsonl", "classification": "classification.jsonl",
         "pair-similarity": "pair_similarity.jsonl"}


def compare(task: str, description: str) -> None:
    """Parse ``TUNED [--base BASE] [--data DIR] [--batch-size N]``, evaluate base and tuned on ``task``
    and print one Markdown table (a row per model, a column per metric, plus the seconds of loading the
    model, encoding the texts and scoring them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("tuned", help="the tuned model: a folder (e.g. runs/sqlite/merged) or a cached hub id")
    parser.add_argument("--base", default=None, help="the base model (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of the task files (built there by build_task_data.py when missing)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    path = args.data / FILES[task]
    if not path.is_file():
        sys.path.insert(0, str(HERE))
        from build_task_data import build

        build(args.data)
    importlib.import_module("embtune.models.inference")  # torch and sentence-transformers load here, not in a row
    from embtune.eval.tasks import METRICS, evaluate_task, read_task_data
    from embtune.models.names import DEFAULT_MODEL
    from embtune.tables import markdown_table

    data = read_task_data(task, path)
    rows = []
    for role, model in (("base", args.base), ("tuned", args.tuned)):
        start = time.perf_counter()
        metrics = evaluate_task(model, task, data, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        rows.append([role, model or DEFAULT_MODEL, *(f"{metrics[k]:.4f}" for k in METRICS[task]), f"{seconds:.0f}"])
    count = f"{len(data)} pairs" if task == "pair-similarity" else f"{len(data)} texts, {len(set(data.labels))} labels"
    print(f"{task} on {path} ({count})\n")
    print(markdown_table(["model", "name", *METRICS[task], "seconds"], rows))
